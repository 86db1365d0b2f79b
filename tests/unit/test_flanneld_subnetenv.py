"""subnet.env: flanneld-reference §4 (`pkg/subnet/subnet.go@H` WriteSubnetFile, main.go's readers)."""
from __future__ import annotations

import os
import stat
from ipaddress import IPv4Network, IPv6Network

import pytest

from cni_flannel.flanneld import subnetenv
from cni_flannel.flanneld.subnetenv import SubnetEnvError, matches, previous_subnets, read, render, write

# §4's example, byte for byte
EXAMPLE = (
    "FLANNEL_NETWORK=10.244.0.0/16\n"
    "FLANNEL_SUBNET=10.244.3.1/24\n"
    "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\n"
    "FLANNEL_IPV6_SUBNET=2001:cafe:42:3::1/64\n"
    "FLANNEL_MTU=1450\n"
    "FLANNEL_IPMASQ=true\n"
)
NET4, SUB4 = IPv4Network("10.244.0.0/16"), IPv4Network("10.244.3.0/24")
NET6, SUB6 = IPv6Network("2001:cafe:42::/56"), IPv6Network("2001:cafe:42:3::/64")


# -- render -------------------------------------------------------------------------------------------

def test_render_dual_stack_is_the_reference_example() -> None:
    """§4: this order, \\n endings, no quotes, SUBNET = lease network + 1, v6 compressed lowercase."""
    text = render(network=NET4, subnet=SUB4, ipv6_network=NET6, ipv6_subnet=SUB6, mtu=1450, ipmasq=True,
                  enable_ipv4=True, enable_ipv6=True)
    assert text == EXAMPLE


def test_render_v4_only_is_the_default() -> None:
    text = render(network=NET4, subnet=SUB4, ipv6_network=NET6, ipv6_subnet=SUB6, mtu=1450, ipmasq=False)
    assert text == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.3.1/24\n"
                    "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")


def test_render_v6_only() -> None:
    """§4: the v4 pair only with EnableIPv4."""
    text = render(network=None, subnet=None, ipv6_network=IPv6Network("FC00::/48"),
                  ipv6_subnet=IPv6Network("fc00:0:0:a::/64"), mtu=1430, ipmasq=True, enable_ipv4=False,
                  enable_ipv6=True)
    assert text == ("FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:a::1/64\n"
                    "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n")


def test_render_small_subnets() -> None:
    text = render(network=IPv4Network("10.0.0.0/28"), subnet=IPv4Network("10.0.0.12/30"), mtu=1500, ipmasq=False)
    assert "FLANNEL_SUBNET=10.0.0.13/30\n" in text


def test_render_refuses_a_missing_network() -> None:
    """The reference would write FLANNEL_NETWORK=0.0.0.0/0, which no plugin can use."""
    with pytest.raises(ValueError, match="IPv4 is enabled"):
        render(network=None, subnet=SUB4, mtu=1450, ipmasq=True)
    with pytest.raises(ValueError, match="IPv6 is enabled"):
        render(network=NET4, subnet=SUB4, ipv6_network=NET6, mtu=1450, ipmasq=True, enable_ipv6=True)


# -- write ---------------------------------------------------------------------------------------------

@pytest.fixture
def umask077():
    old = os.umask(0o077)
    try:
        yield
    finally:
        os.umask(old)


def test_write_mode_0644_under_umask_077(tmp_path, umask077) -> None:
    """§4: renameio: mode 0644 whatever the umask."""
    path = tmp_path / "subnet.env"
    write(str(path), EXAMPLE)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert path.read_bytes() == EXAMPLE.encode()


def test_write_mkdir_p(tmp_path) -> None:
    """§4: mkdir -p (0755) of the parent directories."""
    old = os.umask(0o022)
    try:
        path = tmp_path / "run" / "flannel" / "subnet.env"
        write(str(path), EXAMPLE)
    finally:
        os.umask(old)
    assert path.read_text() == EXAMPLE
    assert stat.S_IMODE((tmp_path / "run" / "flannel").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "run").stat().st_mode) == 0o755


def test_write_leaves_no_temp_file_and_replaces_atomically(tmp_path) -> None:
    """The new file is renamed over the old: a reader holding the old one keeps reading the old text."""
    path = tmp_path / "subnet.env"
    write(str(path), "FLANNEL_MTU=1\n")
    old_inode = path.stat().st_ino
    with open(path) as held:
        write(str(path), EXAMPLE)
        assert held.read() == "FLANNEL_MTU=1\n"
    assert path.stat().st_ino != old_inode
    assert path.read_text() == EXAMPLE
    assert os.listdir(tmp_path) == ["subnet.env"]


def test_write_failure_removes_the_temp_file(tmp_path) -> None:
    """rename(2) onto a directory fails: the error propagates and nothing is left behind."""
    target = tmp_path / "subnet.env"
    target.mkdir()
    with pytest.raises(OSError):
        write(str(target), EXAMPLE)
    assert sorted(os.listdir(tmp_path)) == ["subnet.env"]
    assert os.listdir(target) == []


def test_write_relative_path(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    write("subnet.env", EXAMPLE)
    assert (tmp_path / "subnet.env").read_text() == EXAMPLE


# -- read ----------------------------------------------------------------------------------------------

def test_read_round_trip(tmp_path) -> None:
    path = tmp_path / "subnet.env"
    write(str(path), EXAMPLE)
    assert read(str(path)) == {
        "FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": "10.244.3.1/24",
        "FLANNEL_IPV6_NETWORK": "2001:cafe:42::/56", "FLANNEL_IPV6_SUBNET": "2001:cafe:42:3::1/64",
        "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "true",
    }


def test_read_missing_file_is_empty(tmp_path) -> None:
    assert read(str(tmp_path / "nope.env")) == {}


def test_read_godotenv_forms(tmp_path) -> None:
    """§4: godotenv: quotes, `export`, comments, blank lines (and its YAML-ish `KEY: value`)."""
    path = tmp_path / "subnet.env"
    path.write_text(
        "# written by hand\n"
        "\n"
        "export FLANNEL_NETWORK=10.244.0.0/16\n"
        '   FLANNEL_SUBNET="10.244.3.1/24"   # trailing comment\n'
        "FLANNEL_IPV6_NETWORK='2001:cafe:42::/56'\n"
        "FLANNEL_MTU = 1450 # comment\n"
        "FLANNEL_IPMASQ: true\r\n"
        "EMPTY=\n"
        'ESCAPED="a\\"b\\nc"\n'
        "LITERAL='a\\nb'\n"
        "HASH=a#b\n"
        "export\tTABBED=1\n"
        "DOTTED.KEY=x"
    )
    assert read(str(path)) == {
        "FLANNEL_NETWORK": "10.244.0.0/16", "FLANNEL_SUBNET": "10.244.3.1/24",
        "FLANNEL_IPV6_NETWORK": "2001:cafe:42::/56", "FLANNEL_MTU": "1450", "FLANNEL_IPMASQ": "true",
        "EMPTY": "", "ESCAPED": 'a"b\nc', "LITERAL": "a\\nb", "HASH": "a#b", "TABBED": "1", "DOTTED.KEY": "x",
    }


def test_read_multiline_double_quotes() -> None:
    assert subnetenv.parse('A="x\ny"\nB=2\n') == {"A": "x\ny", "B": "2"}


def test_read_last_duplicate_wins() -> None:
    assert subnetenv.parse("A=1\nA=2\n") == {"A": "2"}


@pytest.mark.parametrize("text,line,what", [
    ("A=1\nFLANNEL_SUBNET\n", 2, "unexpected character in variable name near 'FLANNEL_SUBNET'"),
    ('A=1\nB="unterminated\n', 2, "unterminated quoted value for B"),
    ("A-B=1\n", 1, "unexpected character in variable name near 'A-B=1'"),
    ('A="x" junk\n', 1, "unexpected text after the quoted value of A: 'junk'"),
])
def test_read_errors_name_the_file_and_line(tmp_path, text, line, what) -> None:
    path = tmp_path / "subnet.env"
    path.write_text(text)
    with pytest.raises(SubnetEnvError) as info:
        read(str(path))
    assert str(info.value) == f"{path}:{line}: {what}"


# -- previous_subnets ------------------------------------------------------------------------------------

def write_text(tmp_path, text: str) -> str:
    path = tmp_path / "subnet.env"
    path.write_text(text)
    return str(path)


def test_previous_subnets_dual_stack(tmp_path) -> None:
    """§4: etcd re-leases FLANNEL_SUBNET/FLANNEL_IPV6_SUBNET; masquerade recycles the NETWORK/SUBNET pairs.
    net.ParseCIDR masks the +1 away."""
    assert previous_subnets(write_text(tmp_path, EXAMPLE)) == (SUB4, SUB6, NET4, NET6)


def test_previous_subnets_missing_file(tmp_path) -> None:
    assert previous_subnets(str(tmp_path / "none")) == (None, None, None, None)


def test_previous_subnets_of_a_v010_file(tmp_path) -> None:
    """main.go@10 wrote only SUBNET, MTU and IPMASQ."""
    path = write_text(tmp_path, "FLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n")
    assert previous_subnets(path) == (IPv4Network("10.1.17.0/24"), None, None, None)


def test_previous_subnets_more_than_one_cidr_is_ignored(tmp_path) -> None:
    """ReadCIDRFromSubnetFile: "more than 1 entry found" -> nothing."""
    path = write_text(tmp_path, "FLANNEL_NETWORK=10.1.0.0/16,192.168.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n")
    assert previous_subnets(path) == (IPv4Network("10.1.17.0/24"), None, None, None)


def test_previous_subnets_unparsable_entries_are_skipped(tmp_path) -> None:
    """An entry that does not parse is logged and skipped; one good entry remains and is used."""
    path = write_text(tmp_path, "FLANNEL_SUBNET=junk,10.1.17.1/24\nFLANNEL_IPV6_SUBNET=fc00::1\n")
    assert previous_subnets(path) == (IPv4Network("10.1.17.0/24"), None, None, None)


def test_previous_subnets_wrong_family_is_ignored(tmp_path) -> None:
    path = write_text(tmp_path, "FLANNEL_SUBNET=fc00::1/64\nFLANNEL_IPV6_SUBNET=10.1.17.1/24\n")
    assert previous_subnets(path) == (None, None, None, None)


def test_previous_subnets_of_a_malformed_file(tmp_path) -> None:
    """godotenv.Read fails -> "Couldn't fetch previous ..." and no previous subnet."""
    path = write_text(tmp_path, "FLANNEL_SUBNET=10.1.17.1/24\nBROKEN LINE\n")
    assert previous_subnets(path) == (None, None, None, None)


def test_previous_subnets_quoted(tmp_path) -> None:
    path = write_text(tmp_path, 'export FLANNEL_SUBNET="10.1.17.1/24"\n')
    assert previous_subnets(path)[0] == IPv4Network("10.1.17.0/24")


# -- matches -----------------------------------------------------------------------------------------------

def test_matches(tmp_path) -> None:
    """⚠ #556: the daemon rewrites a missing or changed file; matches() tells it when not to."""
    path = str(tmp_path / "subnet.env")
    assert not matches(path, EXAMPLE)
    write(path, EXAMPLE)
    assert matches(path, EXAMPLE)
    assert not matches(path, EXAMPLE.replace("1450", "1400"))
    assert not matches(path, EXAMPLE + "\n")
    os.unlink(path)
    assert not matches(path, EXAMPLE)
