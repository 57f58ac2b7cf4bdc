"""The checking gateway (`bbjtune serve gateway`): OpenAI's API in front of a model server, with the
BBj checker on every answer, best-of-N, and an exchange log that becomes training data."""
