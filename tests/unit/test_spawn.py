"""spawn.run/which answer as subprocess.run(capture_output=True)/shutil.which do, with real harmless binaries."""
from __future__ import annotations

import locale
import os
import shutil
import subprocess
import sys
import time
from ast import literal_eval
from pathlib import Path

import pytest
from harness import REPO

from cni_flannel.net import spawn

MIB = 1 << 20
LIST_FDS = [sys.executable, "-c", "import os; print(sorted(int(f) for f in os.listdir('/proc/self/fd')))"]


def same_as_subprocess(argv: list[str], **kw: object) -> spawn.Completed:
    ours = spawn.run(argv, **kw)  # type: ignore[arg-type]
    if kw.get("input") is None:
        kw["input"] = b"" if not kw.get("text") else ""  # ours: an empty stdin; subprocess would inherit pytest's
    theirs = subprocess.run(argv, capture_output=True, check=False, **kw)  # type: ignore[call-overload]
    assert (ours.returncode, ours.stdout, ours.stderr) == (theirs.returncode, theirs.stdout, theirs.stderr)
    assert ours.args == theirs.args
    return ours


def test_stdout_stderr_and_exit_status() -> None:
    r = same_as_subprocess(["/bin/sh", "-c", "echo out; echo err >&2; exit 7"])
    assert (r.returncode, r.stdout, r.stderr) == (7, b"out\n", b"err\n")


@pytest.mark.parametrize(("argv", "code"), [(["/bin/true"], 0), (["/bin/false"], 1), (["true"], 0)])
def test_plain_exit_codes(argv: list[str], code: int) -> None:
    assert same_as_subprocess(argv).returncode == code


def test_killed_by_a_signal_is_negative() -> None:
    assert same_as_subprocess(["/bin/sh", "-c", "kill -9 $$"]).returncode == -9


def test_big_input_through_cat() -> None:
    data = os.urandom(4 * MIB)
    assert same_as_subprocess(["/bin/cat"], input=data).stdout == data


def test_big_output_on_both_pipes() -> None:
    r = same_as_subprocess(["/bin/sh", "-c", "head -c 8388608 /dev/zero & head -c 2097152 /dev/zero >&2; wait"])
    assert (len(r.stdout), len(r.stderr)) == (8 * MIB, 2 * MIB)


def test_output_before_reading_input_does_not_deadlock() -> None:
    # the child fills stdout (8 MiB) before it reads any of its 4 MiB of stdin: we must read while we write
    data = os.urandom(4 * MIB)
    r = same_as_subprocess(["/bin/sh", "-c", "head -c 8388608 /dev/zero; cat; cat >&2 </dev/null"], input=data)
    assert r.stdout == bytes(8 * MIB) + data


def test_a_slow_reader_with_a_big_output_does_not_deadlock() -> None:
    # 64 KiB of input makes 4 MiB of output: a blocking write would wait for a child stuck on its full stdout
    code = "import sys\nr, w = sys.stdin.buffer.raw, sys.stdout.buffer\nwhile c := r.read(1024): w.write(c * 64)"
    data = os.urandom(256 * 1024)
    r = same_as_subprocess([sys.executable, "-c", code], input=data, timeout=30)
    assert len(r.stdout) == 64 * len(data)


def test_a_child_that_ignores_its_input() -> None:  # EPIPE on the input is not an error, as in subprocess
    r = same_as_subprocess(["/bin/sh", "-c", "exec 0<&-; echo done"], input=os.urandom(MIB))
    assert r.stdout == b"done\n"


def test_no_input_is_an_empty_stdin() -> None:
    assert spawn.run(["/bin/cat"], timeout=5).stdout == b""


def test_text_mode_translates_newlines_as_subprocess() -> None:
    r = same_as_subprocess(["/bin/sh", "-c", r"printf 'a\r\nb\rc\n'; printf 'x\r\n' >&2"], text=True)
    assert (r.stdout, r.stderr) == ("a\nb\nc\n", "x\n")
    assert same_as_subprocess(["/bin/cat"], input="1\r\n2\r3\n", text=True).stdout == "1\n2\n3\n"


@pytest.mark.skipif(locale.getpreferredencoding(False).lower().replace("-", "") != "utf8",
                    reason="subprocess decodes with the locale's encoding; ours is always UTF-8")
def test_text_mode_is_utf8() -> None:
    assert same_as_subprocess(["/bin/cat"], input="é→\n", text=True).stdout == "é→\n"


def test_env_is_only_what_is_given() -> None:
    r = same_as_subprocess(["env"], env={"ONLY": "this"})  # PATH unset: both search os.defpath
    assert r.stdout == b"ONLY=this\n"


def test_a_bare_name_is_searched_on_the_env_path(tmp_path: Path) -> None:
    tool = tmp_path / "spawn-test-tool"
    tool.write_text("#!/bin/sh\necho found \"$0\"\n")
    tool.chmod(0o755)
    r = same_as_subprocess(["spawn-test-tool"], env={"PATH": f"/nonexistent:{tmp_path}"})
    assert r.stdout == f"found {tool}\n".encode()


def test_environment_defaults_to_ours(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPAWN_TEST_VAR", "42")
    assert same_as_subprocess(["/bin/sh", "-c", "echo $SPAWN_TEST_VAR"]).stdout == b"42\n"


def exec_error(call: object, argv: list[str]) -> OSError:
    with pytest.raises(OSError) as info:
        call(argv)  # type: ignore[operator]
    return info.value


@pytest.mark.parametrize("kind", ["missing name", "missing path", "relative", "directory", "not executable"])
def test_exec_errors_as_subprocess(kind: str, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.write_text("data\n")
    argv = {"missing name": ["no-such-tool-spawn-test"], "missing path": ["/no/such/dir/tool"],
            "relative": ["./no-such-tool"], "directory": [str(tmp_path)], "not executable": [str(plain)]}[kind]
    ours = exec_error(spawn.run, argv)
    theirs = exec_error(lambda a: subprocess.run(a, capture_output=True, check=False), argv)
    assert type(ours) is type(theirs)
    assert (ours.errno, ours.filename, str(ours)) == (theirs.errno, theirs.filename, str(theirs))
    assert ours.filename == argv[0]


def test_exec_error_after_the_path_search_names_argv0(tmp_path: Path) -> None:
    (tmp_path / "spawn-bad-format").write_bytes(b"\x7fELF garbage")
    (tmp_path / "spawn-bad-format").chmod(0o755)
    env = {"PATH": str(tmp_path)}
    ours = exec_error(lambda a: spawn.run(a, env=env), ["spawn-bad-format"])
    theirs = exec_error(lambda a: subprocess.run(a, env=env, capture_output=True, check=False), ["spawn-bad-format"])
    assert (type(ours), ours.errno, ours.filename) == (type(theirs), theirs.errno, theirs.filename)
    assert ours.filename == "spawn-bad-format"


def zombies_of_ours() -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == os.getpid():
                found.append(int(entry))
    return found


def test_timeout_kills_and_reaps_the_child() -> None:
    argv = ["/bin/sh", "-c", "echo $$; exec sleep 5"]
    start = time.monotonic()
    with pytest.raises(spawn.TimeoutExpired) as info:
        spawn.run(argv, timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 2
    pid = int(info.value.stdout)  # what the child printed before the kill
    assert not os.path.exists(f"/proc/{pid}") and zombies_of_ours() == []
    with pytest.raises(subprocess.TimeoutExpired) as theirs:
        subprocess.run(argv, capture_output=True, timeout=0.2, check=False)
    assert (str(info.value), info.value.cmd, info.value.timeout) == (str(theirs.value), argv, 0.2)
    assert info.value.stderr == b"" and info.value.output == info.value.stdout


def test_timeout_does_not_wait_for_a_grandchild_holding_the_pipes() -> None:
    start = time.monotonic()
    with pytest.raises(spawn.TimeoutExpired) as info:
        spawn.run(["/bin/sh", "-c", "sleep 5 & echo $!; wait"], timeout=0.2)
    os.kill(int(info.value.stdout), 9)  # the orphaned sleep we started
    assert time.monotonic() - start < 2 and zombies_of_ours() == []


@pytest.fixture(params=["pidfd", "naps"])
def exit_wait(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    if request.param == "naps":  # a kernel without pidfd_open, or a seccomp filter refusing it
        monkeypatch.setattr(spawn, "_pidfd", lambda pid: -1)


@pytest.mark.usefixtures("exit_wait")
def test_a_fast_child_within_its_timeout() -> None:
    assert same_as_subprocess(["/bin/sh", "-c", "echo ok; sleep 0.05; exit 3"], timeout=5).returncode == 3


@pytest.mark.usefixtures("exit_wait")
def test_timeout_after_the_child_closed_its_pipes() -> None:
    start = time.monotonic()
    with pytest.raises(spawn.TimeoutExpired) as info:
        spawn.run(["/bin/sh", "-c", "echo $$; exec >&- 2>&- sleep 5"], timeout=0.3)
    assert 0.3 <= time.monotonic() - start < 2
    pid = int(info.value.stdout)
    assert not os.path.exists(f"/proc/{pid}") and zombies_of_ours() == []


def test_child_sees_only_stdio() -> None:
    leaked = os.open("/dev/null", os.O_RDONLY)
    pipe = os.pipe()
    try:
        for fd in (leaked, *pipe):
            os.set_inheritable(fd, True)
        ours = literal_eval(spawn.run(LIST_FDS, text=True).stdout)
        theirs = subprocess.run(LIST_FDS, capture_output=True, text=True, check=True).stdout  # close_fds=True
        assert ours == literal_eval(theirs)
        assert ours[:3] == [0, 1, 2] and len(ours) == 4  # the fourth: the listing's own
        assert not {leaked, *pipe} & set(ours)
    finally:
        for fd in (leaked, *pipe):
            os.close(fd)
    fd = os.open("/dev/null", os.O_RDONLY)
    os.set_inheritable(fd, True)
    spawn.run(["/bin/true"])
    assert os.get_inheritable(fd)  # we close it in the child only, never flip the flag in our process
    os.close(fd)


def test_no_fd_leaks_in_our_process(tmp_path: Path) -> None:
    before = sorted(os.listdir("/proc/self/fd"))
    spawn.run(["/bin/cat"], input=b"x" * MIB)
    with pytest.raises(OSError):
        spawn.run([str(tmp_path)])
    with pytest.raises(spawn.TimeoutExpired):
        spawn.run(["/bin/sleep", "5"], input=b"x", timeout=0.05)
    assert sorted(os.listdir("/proc/self/fd")) == before


def test_our_stdio_closed() -> None:
    # with fds 0 and 2 closed the pipes land there; run() must still wire the child's stdio right
    code = ("import os; os.close(0); os.close(2); from cni_flannel.net import spawn; "
            "r = spawn.run(['/bin/sh', '-c', 'cat; echo e >&2'], input=b'in'); "
            "os.write(1, repr((r.stdout, r.stderr, r.returncode)).encode())")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, check=True).stdout
    assert out == repr((b"in", b"e\n", 0)).encode()


def sig_ignored(status: bytes) -> int:
    line = next(x for x in status.decode().splitlines() if x.startswith("SigIgn:"))
    return int(line.split()[1], 16)


def test_signals_restored_in_the_child() -> None:  # restore_signals=True: SIGPIPE/SIGXFSZ not left ignored
    argv = ["/bin/cat", "/proc/self/status"]
    ours = sig_ignored(spawn.run(argv).stdout)
    forked = sig_ignored(subprocess.run(argv, capture_output=True, check=True).stdout)
    spawned = sig_ignored(subprocess.run(argv, capture_output=True, close_fds=False, check=True).stdout)
    glibc_internal = 1 << (32 - 1) | 1 << (33 - 1)  # posix_spawn leaves them ignored: subprocess's path too
    assert ours == spawned and ours & ~glibc_internal == forked
    assert not ours & (1 << (13 - 1) | 1 << (25 - 1))  # SIGPIPE, SIGXFSZ: ignored here (Python), not in the child


@pytest.fixture
def path_dir(tmp_path: Path) -> Path:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "a" / "tooldir").mkdir()  # a directory on PATH, same name as nothing runnable
    (tmp_path / "a" / "both").write_text("x")  # not executable here ...
    (tmp_path / "b" / "both").write_text("#!/bin/sh\n")
    (tmp_path / "b" / "both").chmod(0o755)  # ... executable further on
    (tmp_path / "plain").write_text("x")
    return tmp_path


NAMES = ["sh", "python3", "no-such-tool-spawn-test", "/bin/sh", "/bin", "tooldir", "both", "plain", "", "./sh"]


@pytest.mark.parametrize("name", NAMES)
def test_which_as_shutil(name: str, path_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    search = f"{path_dir}/a:{path_dir}/b:{os.environ.get('PATH', os.defpath)}"
    assert spawn.which(name, search) == shutil.which(name, path=search)
    assert spawn.which(str(path_dir / "plain")) == shutil.which(str(path_dir / "plain")) is None
    monkeypatch.setenv("PATH", search)
    assert spawn.which(name) == shutil.which(name)
    monkeypatch.delenv("PATH")
    assert spawn.which(name) == shutil.which(name)
    assert spawn.which(name, "") == shutil.which(name, path="")


def test_which_finds_the_executable_not_the_first_name(path_dir: Path) -> None:
    assert spawn.which("both", f"{path_dir}/a:{path_dir}/b") == f"{path_dir}/b/both"


def test_which_empty_entry_is_the_cwd(path_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(path_dir / "b")
    assert spawn.which("both", ":/nonexistent") == shutil.which("both", path=":/nonexistent") == "both"


def test_import_pulls_in_nothing_heavy() -> None:
    # -S: no site, so no .pth hooks (an editable install's finder imports shutil, threading...); as in the frozen build
    code = ("import sys; sys.path.insert(0, '.'); import cni_flannel.net; base = set(sys.modules); "
            "import cni_flannel.net.spawn; print(sorted(base)); print(sorted(set(sys.modules) - base))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], cwd=REPO, capture_output=True, text=True,
                         check=True).stdout.splitlines()
    base, added = literal_eval(out[0]), literal_eval(out[1])
    heavy = {"subprocess", "shutil", "threading", "selectors", "signal", "typing", "locale", "enum"}
    assert not heavy & (set(base) | set(added)), heavy & (set(base) | set(added))
    assert "cni_flannel.net.spawn" in added and "select" in base + added
