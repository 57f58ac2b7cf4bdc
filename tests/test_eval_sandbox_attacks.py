"""The hostile samples of the security review, as root and as an unprivileged user: none gets out.

Every attack runs through the real sandbox (`run_python`, default isolation: bubblewrap). The
unprivileged run matters most: it is how users run bbjtune, and where the hand-made namespaces let
a sample read ~/.ssh, unmount what hid the project, and reach the user's ssh-agent.
"""

from __future__ import annotations

import os
import secrets
import shutil
import tempfile
from pathlib import Path

import pytest
from sandbox_users import USERS, make_home, run_as

from bbjtune.errors import BbjtuneError
from bbjtune.evaluate.sandbox import detect_isolation


def _bwrap_works() -> bool:
    try:
        return detect_isolation("bwrap").mode == "bwrap"
    except BbjtuneError:
        return False


pytestmark = pytest.mark.skipif(
    not _bwrap_works(),
    reason="bubblewrap is not installed or cannot start here "
    "(make test installs it: apt-get install bubblewrap)",
)


@pytest.fixture(scope="module", params=USERS)
def seen(request):
    user = request.param
    home = make_home(user)
    project = Path(tempfile.mkdtemp(prefix="bbjtune-test-project-"))
    if user == "nobody" and os.geteuid() == 0:
        shutil.chown(project, "nobody", "nogroup")
    try:
        yield run_as(
            user,
            "import sandbox_attacks; sandbox_attacks.main()",
            home=home,
            cwd=project,
            extra_env={"BBJTUNE_TEST_SECRET": "harness-secret-" + secrets.token_hex(8)},
        )
    finally:
        shutil.rmtree(home, ignore_errors=True)
        shutil.rmtree(project, ignore_errors=True)


def test_the_default_isolation_is_bubblewrap(seen):
    assert seen["isolation"]["mode"] == "bwrap" and seen["isolation"]["home_hidden"]


def test_the_users_ssh_key_and_shell_setup_are_out_of_reach(seen):
    assert not seen["home"]["key_read"], seen["home"]
    assert not seen["home"]["bashrc_changed"], seen["home"]


def test_the_project_stays_hidden_even_after_trying_to_unmount_it(seen):
    assert not seen["project"]["project_read"], seen["project"]
    assert not seen["project"]["project_written"], seen["project"]


def test_no_network_through_child_programs_or_raw_system_calls(seen):
    assert seen["network"]["connections"] == 0, seen["network"]
    assert "subprocess: 1" in seen["network"]["stderr"] and "ctypes: -1" in seen["network"]["stderr"]


def test_host_unix_sockets_and_the_ssh_agent_are_unreachable(seen):
    assert seen["unix_sockets"]["connections"] == 0, seen["unix_sockets"]


def test_the_host_processes_and_the_harness_environment_are_invisible(seen):
    assert not seen["proc"]["secret_seen"], seen["proc"]
    assert 0 < seen["proc"]["visible_pids"] <= 4, seen["proc"]  # bwrap's init, the boot, the sample


def test_memory_is_capped_for_all_processes_together(seen):
    assert seen["memory"]["status"] == "memory_limit", seen["memory"]


def test_files_in_tmp_var_tmp_and_dev_shm_vanish_and_dev_shm_is_small(seen):
    assert seen["leftovers"]["left_behind"] == [], seen["leftovers"]
    assert "shm: wrote 300 MiB" not in seen["leftovers"]["stderr"], seen["leftovers"]


def test_a_background_process_does_not_outlive_the_sample(seen):
    assert seen["background"]["survivors"] == [], seen["background"]
