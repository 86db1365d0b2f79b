"""flanneld's command line and environment: flanneld-reference §1.1 (flags, env) and §1.2 step 1.

Pure logic: parse_args(argv, env) never looks at os.environ, so every case is a plain call.
"""
from __future__ import annotations

import pytest

from cni_flannel.flanneld import cli
from cni_flannel.flanneld.cli import FatalError, Options, UsageError, format_options, parse_args, usage, validate


def parse(*argv: str, **env: str) -> Options:
    return parse_args(list(argv), env)


def usage_error(*argv: str, **env: str) -> str:
    with pytest.raises(UsageError) as info:
        parse_args(list(argv), env)
    return str(info.value)


DEFAULTS = {
    "etcd_endpoints": ["http://127.0.0.1:4001", "http://127.0.0.1:2379"],
    "etcd_prefix": "/coreos.com/network",
    "etcd_keyfile": "", "etcd_certfile": "", "etcd_cafile": "", "etcd_username": "", "etcd_password": "",
    "kube_subnet_mgr": False, "kube_api_url": "", "kubeconfig_file": "",
    "kube_annotation_prefix": "flannel.alpha.coreos.com",
    "iface": [], "iface_regex": [], "iface_can_reach": "",
    "subnet_file": "/run/flannel/subnet.env", "net_config_path": "/etc/kube-flannel/net-conf.json",
    "public_ip": "", "public_ipv6": "", "subnet_lease_renew_margin": 60,
    "ip_masq": False, "ip_masq_fully_random_disable": False, "iptables_resync": 5, "iptables_forward_rules": True,
    "ip_blackhole_route": False, "healthz_ip": "0.0.0.0", "healthz_port": 0, "set_node_network_unavailable": True,
    "version": False, "help": False, "v": 0, "vmodule": "", "log_backtrace_at": "", "state_dir": "",
    "reconcile_period": 10,
}


# -- defaults and plain syntax ----------------------------------------------------------------------

def test_defaults_are_the_references() -> None:
    """§1.1 table: every default, with no flag and no env."""
    opts = parse()
    assert {name: getattr(opts, name) for name in DEFAULTS} == DEFAULTS
    assert opts == Options()


def test_every_option_field_is_known() -> None:
    """Options has exactly the fields of the brief (no stray, none missing)."""
    assert set(Options.__record_fields__) == set(DEFAULTS)  # type: ignore[attr-defined]


STRING_FLAGS = [f for f in cli.FLAGS.values() if f.kind == "string"]


@pytest.mark.parametrize("flag", STRING_FLAGS, ids=lambda f: f.name)
@pytest.mark.parametrize("form", ["-{n} {v}", "--{n} {v}", "-{n}={v}", "--{n}={v}"])
def test_string_flag_syntax(flag, form) -> None:
    """§1.1: `-x` == `--x`; `--x=v` and `--x v`."""
    argv = form.format(n=flag.name, v="val:ue").split(" ")
    assert getattr(parse(*argv), flag.attr) == "val:ue"


def test_value_may_contain_equals_and_may_start_with_dash() -> None:
    """Go splits at the first '=', and a non-bool flag takes the next argument whatever it is."""
    assert parse("--etcd-prefix=/a=b").etcd_prefix == "/a=b"
    assert parse("--etcd-prefix", "--ip-masq").etcd_prefix == "--ip-masq"
    assert parse("--etcd-prefix", "--ip-masq").ip_masq is False
    assert parse("--etcd-prefix=").etcd_prefix == ""


def test_last_occurrence_wins_for_plain_flags() -> None:
    assert parse("--subnet-file", "/a", "--subnet-file=/b").subnet_file == "/b"


def test_etcd_endpoints_split_on_comma() -> None:
    """§1.1: `--etcd-endpoints` is split on ','."""
    assert parse("--etcd-endpoints=http://a:2379,https://b:2379").etcd_endpoints == ["http://a:2379",
                                                                                     "https://b:2379"]
    assert parse("--etcd-endpoints", "http://a:2379").etcd_endpoints == ["http://a:2379"]


@pytest.mark.parametrize("name", ["iface", "iface-regex"])
def test_repeatable_slices_append(name) -> None:
    """§1.1: each `--iface` / `--iface-regex` appends, in order."""
    opts = parse(f"--{name}", "eth0", f"-{name}=10.0.0.1", f"--{name}=a,b")
    assert getattr(opts, name.replace("-", "_")) == ["eth0", "10.0.0.1", "a,b"]


# -- bools -------------------------------------------------------------------------------------------

BOOL_FLAGS = [f for f in cli.FLAGS.values() if f.kind == "bool"]


@pytest.mark.parametrize("flag", BOOL_FLAGS, ids=lambda f: f.name)
def test_bool_flag_alone_is_true(flag) -> None:
    assert getattr(parse(f"--{flag.name}"), flag.attr) is True
    assert getattr(parse(f"-{flag.name}"), flag.attr) is True


@pytest.mark.parametrize("text,value", [(t, True) for t in ("1", "t", "T", "TRUE", "true", "True")]
                         + [(t, False) for t in ("0", "f", "F", "FALSE", "false", "False")])
def test_bool_values_are_strconv_parsebool(text, value) -> None:
    """§1.1: a bool takes a value only as `--x=v`, spelled as strconv.ParseBool accepts."""
    assert parse(f"--iptables-forward-rules={text}").iptables_forward_rules is value
    assert parse(f"-ip-masq={text}").ip_masq is value


@pytest.mark.parametrize("text", ["yes", "no", "tRUE", "", "2"])
def test_bad_bool_value(text) -> None:
    assert usage_error(f"--ip-masq={text}") == f'invalid boolean value "{text}" for -ip-masq: parse error'


def test_bool_does_not_take_the_next_argument() -> None:
    """`--x false` is `--x` then a positional: Go stops there; we refuse the leftover (⚠ ignored upstream)."""
    msg = usage_error("--iptables-forward-rules", "false")
    assert msg.startswith('unexpected argument "false"')
    assert "--flag=false" in msg


# -- ints and klog values ----------------------------------------------------------------------------

@pytest.mark.parametrize("text,value", [("8080", 8080), ("0x1f90", 8080), ("0X1F90", 8080), ("017", 15),
                                        ("0o17", 15), ("0b101", 5), ("1_000", 1000), ("0x_1f", 31), ("+7", 7),
                                        ("-7", -7), ("0", 0), ("00", 0)])
def test_int_is_strconv_parseint_base0(text, value) -> None:
    """flag.IntVar uses strconv.ParseInt(s, 0, 64): prefixes and '_' separators."""
    assert parse(f"--healthz-port={text}").healthz_port == value
    assert parse("--iptables-resync", text).iptables_resync == value


@pytest.mark.parametrize("text", ["x", "", "1.5", "08", "0x", "1_", "_1", "1__0", " 1", "1 ", "0xg", "--1", "+"])
def test_bad_int_is_parse_error(text) -> None:
    assert usage_error(f"--healthz-port={text}") == f'invalid value "{text}" for flag -healthz-port: parse error'


def test_int_out_of_range() -> None:
    assert usage_error("--subnet-lease-renew-margin", "9223372036854775808") == \
        'invalid value "9223372036854775808" for flag -subnet-lease-renew-margin: value out of range'
    assert parse("--subnet-lease-renew-margin=-9223372036854775808").subnet_lease_renew_margin == -(1 << 63)


def test_klog_v() -> None:
    """-v is klog's Level: strconv.ParseInt(s, 10, 32), its error text as is."""
    assert parse("-v", "4").v == 4
    assert parse("--v=10").v == 10
    assert usage_error("-v=x") == 'invalid value "x" for flag -v: strconv.ParseInt: parsing "x": invalid syntax'
    assert usage_error("-v=0x2") == 'invalid value "0x2" for flag -v: strconv.ParseInt: parsing "0x2": invalid syntax'
    assert usage_error("-v=2147483648") == \
        'invalid value "2147483648" for flag -v: strconv.ParseInt: parsing "2147483648": value out of range'


def test_klog_vmodule() -> None:
    assert parse("--vmodule=vxlan*=4,main=2").vmodule == "vxlan*=4,main=2"
    assert parse("-vmodule", "a=1,").vmodule == "a=1,"
    for bad in ("main", "main=", "=2", "main=x", "a=1=2"):
        assert usage_error(f"--vmodule={bad}") == \
            f'invalid value "{bad}" for flag -vmodule: syntax error: expect comma-separated list of filename=N'
    assert usage_error("--vmodule=a=-1") == 'invalid value "a=-1" for flag -vmodule: negative value for vmodule level'


def test_klog_log_backtrace_at() -> None:
    assert parse("--log_backtrace_at=main.go:120").log_backtrace_at == "main.go:120"
    assert parse("-log_backtrace_at=").log_backtrace_at == ""
    for bad in ("main:1", "main.go", "main.go:x", "a.go:1:2"):
        assert usage_error(f"-log_backtrace_at={bad}") == \
            f'invalid value "{bad}" for flag -log_backtrace_at: syntax error: expect file.go:234'
    assert usage_error("-log_backtrace_at=a.go:0") == \
        'invalid value "a.go:0" for flag -log_backtrace_at: negative or zero value for level'


# -- the errors of Go's flag package ------------------------------------------------------------------

def test_unknown_flag() -> None:
    assert usage_error("--foo") == "flag provided but not defined: -foo"
    assert usage_error("-foo=1") == "flag provided but not defined: -foo"
    # gone since v0.21–v0.22 (§1.1)
    assert usage_error("--use-multi-cluster-cidr") == "flag provided but not defined: -use-multi-cluster-cidr"
    assert usage_error("--subnet-dir=/x") == "flag provided but not defined: -subnet-dir"


def test_missing_value() -> None:
    assert usage_error("--etcd-prefix") == "flag needs an argument: -etcd-prefix"
    assert usage_error("--ip-masq", "-iface") == "flag needs an argument: -iface"


@pytest.mark.parametrize("arg", ["---x", "-=x", "--=x"])
def test_bad_flag_syntax(arg) -> None:
    assert usage_error(arg) == f"bad flag syntax: {arg}"


def test_double_dash_ends_flags() -> None:
    assert parse("--ip-masq", "--").ip_masq is True
    assert usage_error("--", "--ip-masq").startswith('unexpected argument "--ip-masq"')


@pytest.mark.parametrize("arg", ["-", "eth0", "x"])
def test_positional_arguments_are_refused(arg) -> None:
    """Go stops at the first non-flag and flanneld ignores the rest (⚠): a typo'd flag went unnoticed."""
    assert usage_error("--ip-masq", arg, "--kube-subnet-mgr").startswith(f'unexpected argument "{arg}"')


@pytest.mark.parametrize("arg", ["-h", "--h", "-help", "--help", "--help=false"])
def test_help(arg) -> None:
    """§1.1: -h/-help/--help is not a declared flag; parsing stops there (what follows is not looked at)."""
    opts = parse("--ip-masq", arg, "--no-such-flag", "junk", FLANNELD_ETCD_PREFIX="/x")
    assert opts.help is True
    assert opts.ip_masq is True
    assert opts.etcd_prefix == "/coreos.com/network"


def test_bad_flag_before_help_is_still_an_error() -> None:
    assert usage_error("--nope", "--help") == "flag provided but not defined: -nope"


def test_usage_error_quotes_like_go() -> None:
    assert usage_error('--healthz-port=a"b\\c\n') == \
        'invalid value "a\\"b\\\\c\\n" for flag -healthz-port: parse error'


# -- the environment -------------------------------------------------------------------------------

@pytest.mark.parametrize("flag", [f for f in cli.FLAGS.values() if f.name != "version"], ids=lambda f: f.name)
def test_every_flag_has_its_env_variable(flag) -> None:
    """§1.1: FLANNELD_<NAME>, uppercased, '-' -> '_'."""
    value = {"string": "/v", "csv": "http://e:1", "int": "7", "bool": "true", "slice": "x", "level": "3",
             "vmodule": "m=1", "trace": "a.go:1"}[flag.kind]
    expect = {"int": 7, "bool": True, "slice": ["x"], "level": 3, "csv": ["http://e:1"]}.get(flag.kind, value)
    env = {"FLANNELD_" + flag.name.upper().replace("-", "_"): value}
    assert getattr(parse(**env), flag.attr) == expect


def test_env_names_are_the_references() -> None:
    assert cli.FLAGS["etcd-endpoints"].env == "FLANNELD_ETCD_ENDPOINTS"
    assert cli.FLAGS["ip-masq"].env == "FLANNELD_IP_MASQ"
    assert cli.FLAGS["v"].env == "FLANNELD_V"
    assert cli.FLAGS["log_backtrace_at"].env == "FLANNELD_LOG_BACKTRACE_AT"
    assert cli.FLAGS["kubeconfig-file"].env == "FLANNELD_KUBECONFIG_FILE"
    assert cli.FLAGS["state-dir"].env == "FLANNELD_STATE_DIR"


def test_command_line_wins_over_env() -> None:
    """§1.1: env only for flags NOT on the command line, even when the flag repeats its default."""
    opts = parse("--etcd-prefix=/cli", "--iptables-forward-rules=true",
                 FLANNELD_ETCD_PREFIX="/env", FLANNELD_IPTABLES_FORWARD_RULES="false", FLANNELD_IP_MASQ="1")
    assert opts.etcd_prefix == "/cli"
    assert opts.iptables_forward_rules is True
    assert opts.ip_masq is True


def test_empty_env_is_ignored() -> None:
    assert parse(FLANNELD_ETCD_PREFIX="", FLANNELD_HEALTHZ_IP="").etcd_prefix == "/coreos.com/network"
    assert parse(FLANNELD_HEALTHZ_IP="").healthz_ip == "0.0.0.0"


def test_env_iface_lists_split_on_comma() -> None:
    """⚠ the reference makes FLANNELD_IFACE=a,b one entry "a,b"; ours are two (empty parts dropped)."""
    opts = parse(FLANNELD_IFACE="eth0,10.0.0.1", FLANNELD_IFACE_REGEX="^en.*,,^wl.*")
    assert opts.iface == ["eth0", "10.0.0.1"]
    assert opts.iface_regex == ["^en.*", "^wl.*"]


def test_env_iface_ignored_when_given_on_the_command_line() -> None:
    assert parse("--iface=eth1", FLANNELD_IFACE="eth0,eth2").iface == ["eth1"]


def test_env_version_does_nothing() -> None:
    """⚠ (kept) `--version` is read before the environment: FLANNELD_VERSION does nothing."""
    assert parse(FLANNELD_VERSION="true").version is False


def test_version_skips_the_environment() -> None:
    """`--version` exits before the env is read, so a bad env value cannot stop it."""
    opts = parse("--version", FLANNELD_HEALTHZ_PORT="x", FLANNELD_ETCD_PREFIX="/env")
    assert opts.version is True
    assert opts.etcd_prefix == "/coreos.com/network"


def test_bad_env_value_names_the_variable() -> None:
    """⚠ the reference only logs "Failed to set flag FLANNELD from env"; ours is an error naming it."""
    assert usage_error(FLANNELD_HEALTHZ_PORT="80x") == 'invalid value "80x" for FLANNELD_HEALTHZ_PORT: parse error'
    assert usage_error(FLANNELD_IP_MASQ="yes") == 'invalid value "yes" for FLANNELD_IP_MASQ: parse error'


def test_every_bad_env_value_is_named() -> None:
    msg = usage_error(FLANNELD_V="high", FLANNELD_IPTABLES_RESYNC="soon")
    assert 'FLANNELD_IPTABLES_RESYNC: parse error' in msg
    assert 'FLANNELD_V: strconv.ParseInt: parsing "high": invalid syntax' in msg


def test_env_ints_take_go_prefixes() -> None:
    assert parse(FLANNELD_HEALTHZ_PORT="0x10").healthz_port == 16


def test_unrelated_env_is_ignored() -> None:
    assert parse(FLANNELD_NO_SUCH="1", FLANNELD_HELP="1", ETCD_PREFIX="/x") == Options()


# -- usage ------------------------------------------------------------------------------------------

def test_usage_head_and_order() -> None:
    """§1.1: `Usage: <argv0> [OPTION]...` then flag.PrintDefaults, flags sorted by name."""
    text = usage("/usr/bin/flanneld")
    assert text.startswith("Usage: /usr/bin/flanneld [OPTION]...\n  -etcd-cafile string\n")
    names = [line.split()[0][1:] for line in text.splitlines()[1:] if line.startswith("  -")]
    assert names == sorted(cli.FLAGS)
    assert text.endswith("\n")


@pytest.mark.parametrize("block", [
    '  -etcd-endpoints string\n    \ta comma-delimited list of etcd endpoints '
    '(default "http://127.0.0.1:4001,http://127.0.0.1:2379")\n',
    "  -etcd-password string\n    \tpassword for BasicAuth to etcd\n",
    "  -healthz-port int\n    \tthe port for healthz server to listen(0 to disable)\n",
    "  -subnet-lease-renew-margin int\n    \tsubnet lease renewal margin, in minutes, ranging from 1 to 1439 "
    "(default 60)\n",
    "  -ip-masq\n    \tsetup IP masquerade rule for traffic destined outside of overlay network\n",
    "  -iptables-forward-rules\n    \tadd default accept rules to FORWARD chain in iptables (default true)\n",
    "  -iface value\n    \tinterface to use (IP or name) for inter-host communication. Can be specified multiple "
    "times to check each option in order. Returns the first match found.\n",
    '  -kube-annotation-prefix string\n    \tKubernetes annotation prefix. Can contain single slash "/", otherwise '
    'it will be appended at the end. (default "flannel.alpha.coreos.com")\n',
    "  -v value\n    \tnumber for the log level verbosity\n",
    "  -log_backtrace_at value\n    \twhen logging hits line file:N, emit a stack trace\n",
    "  -version\n    \tprint version and exit\n",
])
def test_usage_blocks_are_go_printdefaults(block) -> None:
    assert block in usage("flanneld")


# -- validate ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("margin", [0, -1, 1440, 100000])
def test_renew_margin_out_of_range(margin) -> None:
    """§1.1 / §1.2 step 1: 1..1439, else the reference's message, exit 1."""
    with pytest.raises(FatalError) as info:
        validate(Options(subnet_lease_renew_margin=margin))
    assert str(info.value) == "Invalid subnet-lease-renew-margin option, out of acceptable range"


@pytest.mark.parametrize("margin", [1, 60, 1439])
def test_renew_margin_in_range(margin) -> None:
    validate(Options(subnet_lease_renew_margin=margin))


def test_renew_margin_checked_in_kube_mode_too() -> None:
    with pytest.raises(FatalError):
        validate(Options(kube_subnet_mgr=True, subnet_lease_renew_margin=0))


def fatal(**kw) -> str:
    with pytest.raises(FatalError) as info:
        validate(Options(**kw))
    return str(info.value)


def test_public_ip_family_is_checked() -> None:
    """⚠ the reference panics "Address is not an IPv4 address" (#1629, #1985): a clear message instead."""
    assert fatal(public_ip="fd00::1") == \
        'Invalid --public-ip option "fd00::1": not an IPv4 address (use --public-ipv6 for IPv6)'
    assert fatal(public_ipv6="192.168.1.1") == \
        'Invalid --public-ipv6 option "192.168.1.1": not an IPv6 address (use --public-ip for IPv4)'
    assert fatal(public_ip="node1") == 'Invalid --public-ip option "node1": not an IP address'
    assert fatal(public_ipv6="fd00::1/64") == 'Invalid --public-ipv6 option "fd00::1/64": not an IP address'
    validate(Options(public_ip="192.168.1.1", public_ipv6="fd00::1"))
    validate(Options(public_ip="::ffff:192.168.1.1"))  # net.ParseIP(...).To4() accepts it


@pytest.mark.parametrize("port", [-1, 65536])
def test_healthz_port_range(port) -> None:
    assert fatal(healthz_port=port) == f"Invalid healthz-port option {port}, out of acceptable range 0..65535"


def test_healthz_port_edges_ok() -> None:
    validate(Options(healthz_port=0))
    validate(Options(healthz_port=65535))


def test_iptables_resync_must_be_positive() -> None:
    """time.After(0) would spin the reference's resync loops."""
    assert fatal(iptables_resync=0) == "Invalid iptables-resync option 0, must be at least 1 second"


def test_empty_etcd_endpoint_in_etcd_mode() -> None:
    assert fatal(etcd_endpoints=["http://a:2379", ""]) == \
        'Invalid etcd-endpoints option "http://a:2379,": an endpoint is empty'
    validate(Options(etcd_endpoints=[""], kube_subnet_mgr=True))


def test_annotation_prefix_is_not_validated_here() -> None:
    """The kube manager owns that check (§6.3)."""
    validate(Options(kube_annotation_prefix="a/b/c"))


def test_validate_accepts_the_defaults() -> None:
    validate(parse())


# -- the first log line ------------------------------------------------------------------------------

DEFAULT_LINE = (
    "CLI flags config: {etcdEndpoints:http://127.0.0.1:4001,http://127.0.0.1:2379 etcdPrefix:/coreos.com/network "
    "etcdKeyfile: etcdCertfile: etcdCAFile: etcdUsername: etcdPassword: version:false kubeSubnetMgr:false "
    "kubeApiUrl: kubeAnnotationPrefix:flannel.alpha.coreos.com kubeConfigFile: iface:[] ifaceRegex:[] "
    "ipMasq:false ipMasqRandomFullyDisable:false ifaceCanReach: subnetFile:/run/flannel/subnet.env publicIP: "
    "publicIPv6: subnetLeaseRenewMargin:60 healthzIP:0.0.0.0 healthzPort:0 iptablesResyncSeconds:5 "
    "iptablesForwardRules:true blackholeRoute:false netConfPath:/etc/kube-flannel/net-conf.json "
    "setNodeNetworkUnavailable:true stateDir: reconcilePeriod:10}"
)


def test_format_options_is_go_percent_plus_v() -> None:
    """§1.1: `CLI flags config: %+v` of CmdLineOpts, field order and names of main.go@H (+ our stateDir)."""
    assert format_options(Options()) == DEFAULT_LINE


def test_format_options_masks_the_password() -> None:
    """⚠ the reference logs the etcd password in clear."""
    line = format_options(parse("--etcd-password=hunter2", "--etcd-username=root", "--iface=eth0",
                                "--iface=eth1"))
    assert "hunter2" not in line
    assert "etcdUsername:root etcdPassword:******** " in line
    assert " iface:[eth0 eth1] " in line


def test_repr_masks_the_password() -> None:
    opts = parse("--etcd-password=hunter2")
    assert "hunter2" not in repr(opts)
    assert "etcd_password='********'" in repr(opts)
    assert opts.etcd_password == "hunter2"
