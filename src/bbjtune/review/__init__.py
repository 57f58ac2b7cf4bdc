"""Human review: a local web page where BBj experts compare two models' answers blind.

`bbjtune review RUN_A RUN_B` pairs the two evaluation runs' `generations.jsonl` by prompt, shows
each pair in a random but stable left/right order, and stores the ratings in SQLite beside the
runs (`eval/review/ratings.sqlite`). `results.json` in the same folder holds the summary that
`bbjtune eval compare` merges into its report (read through `bbjtune.review_summary`).

Modules: `items` (reading and pairing generations), `storage` (SQLite), `blind` (each reviewer's
order and left/right sides), `stats` (win rate and its confidence interval), `results` (summary,
export), `render` (answers as escaped, highlighted HTML with checker diagnostics), `app` (the web
app), `cli` (the `bbjtune review` verbs). The access token, host check and CSRF protection are
`bbjtune.web_security`, shared with the checking gateway.
"""
