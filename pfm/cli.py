"""The `pfm` command: php-fpm's flags, plus a quick mode that runs one pool
from the command line without a config file."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import sys

from . import __version__
from .log import ERROR, NOTICE, WARNING, stderr_line

EX_USAGE, EX_CONFIG = 64, 78
DEFAULT_CONFIG = "/etc/pfm/pfm.conf"

USAGE = """\
Usage: pfm [-y CONFIG] [-t] [-F | -D] [-O] [-R] [-g PIDFILE] [-p PREFIX]
       pfm --app MODULE:CALLABLE | --demo  [--listen ADDRESS] [--workers N] [--user NAME] [-R]
       pfm status [POOL] [--json] [--full] | pfm top | pfm ping [POOL]   [-y CONFIG] [-p PREFIX]
"""


class UsageParser(argparse.ArgumentParser):
    """A usage error names the command, shows its usage lines and exits 64."""

    def error(self, message: str) -> None:
        sys.stderr.write("%s: %s\nUsage: %s" % (self.prog, message, self.usage))
        sys.exit(EX_USAGE)


def build_parser() -> argparse.ArgumentParser:
    p = UsageParser(prog="pfm", usage=USAGE[len("Usage: "):], add_help=False,
                description="PHP-FPM for Python: runs WSGI applications behind a "
                            "web server in pools of pre-forked FastCGI workers.")
    p.add_argument("-y", "--fpm-config", "--config", dest="config", metavar="FILE",
                   help="the configuration file (default: PREFIX/etc/pfm.conf with -p, "
                        "else /etc/pfm/pfm.conf)")
    p.add_argument("-t", "--test", action="count", default=0,
                   help="test the configuration and exit; twice (-tt) also dumps it")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("-F", "--nodaemonize", action="store_true",
                      help="stay in the foreground (overrides daemonize)")
    mode.add_argument("-D", "--daemonize", action="store_true",
                      help="go to the background (overrides daemonize)")
    p.add_argument("-O", "--force-stderr", action="store_true",
                   help="log to stderr even when error_log is set (containers)")
    p.add_argument("-R", "--allow-to-run-as-root", action="store_true",
                   help="allow pools to run as root")
    p.add_argument("-g", "--pid", metavar="FILE", help="the pid file (overrides pid)")
    p.add_argument("-p", "--prefix", metavar="DIR", help="prefix for relative paths")
    p.add_argument("-v", "--version", action="store_true", help="print the version and exit")
    p.add_argument("-h", "--help", action="store_true", help="print this help and exit")
    quick = p.add_argument_group("quick mode (one pool, no config file)")
    quick.add_argument("--app", metavar="MODULE:CALLABLE", help="the WSGI application")
    quick.add_argument("--listen", metavar="ADDRESS",
                       help="127.0.0.1:9000, [::1]:9000, 9000, /path/to.sock or "
                            "unix:/path/to.sock (default 127.0.0.1:9000)")
    quick.add_argument("--workers", type=int, metavar="N", help="number of workers (default 2)")
    quick.add_argument("--user", metavar="NAME",
                       help="run the workers as this user (when started as root)")
    quick.add_argument("--demo", action="store_true",
                       help="serve the demo application (pfm.demo:app); pfm never serves it "
                            "unasked")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["jobs"]:  # `pfm jobs ...`: the job queues (pfm/jobs/cli.py)
        from .jobs.cli import main as jobs_main
        return jobs_main(argv[1:], config_url=None)
    from . import ctl
    at = ctl.find_command(argv)
    if at is not None:  # pfm status|top|ping, with pfm's -y/-p before or after the word
        return ctl.main(argv[at], argv[:at] + argv[at + 1:])
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest:
        parser.error("unexpected argument: %s" % " ".join(rest))
    if args.help:
        parser.print_help()
        return 0
    if args.version:
        print("pfm %s (Python %s)" % (__version__, sys.version.split()[0]))
        return 0
    if args.prefix and not os.path.isdir(args.prefix):
        stderr_line(ERROR, "the global prefix '%s' does not exist or is not a directory"
                    % args.prefix)
        return EX_CONFIG

    from . import config as cfg
    try:
        config = load_config(args, cfg)
    except cfg.ConfigError as e:
        return config_failed([e])

    from .isolation import root_pool_errors
    problems = [] if args.allow_to_run_as_root else root_pool_errors(config)
    if problems:
        for level, message in problems:
            stderr_line(level, message)
        stderr_line(ERROR, "pfm initialization failed")
        return EX_CONFIG

    # The applications, imported as their workers will (not again in a master
    # that re-executed itself: the reload that led to it checked them).
    from . import appcheck, reexec
    if args.test or reexec.ENV_SOCKETS not in os.environ:
        failures = appcheck.check(config)
        if failures:
            return config_failed(failures)

    if args.test:
        return test_passed(config, args.test, cfg)

    from .master import build_master
    foreground = True if args.nodaemonize else False if args.daemonize else None
    if config.path is None:
        foreground = not args.daemonize
    return build_master(config, foreground=foreground, force_stderr=args.force_stderr,
                        pidfile=args.pid).run()


def test_passed(config, times: int, cfg) -> int:
    """`pfm -t` once the configuration and the apps passed: the warnings,
    the whole configuration with -tt, and php-fpm's closing line."""
    for warning in config.warnings:
        stderr_line(WARNING, warning)
    if times > 1:
        for line in cfg.dump(config):
            stderr_line(NOTICE, line)
    stderr_line(NOTICE, "configuration file %s test is successful" % (config.path or "(built-in)"))
    return 0


def config_failed(errors) -> int:
    """php-fpm's lines for a configuration that cannot run, then EX_CONFIG."""
    for e in errors:
        stderr_line(ERROR, str(e))
        for line in getattr(e, "details", ()):
            stderr_line(ERROR, "%s%s" % ("[pool %s] " % e.pool if e.pool else "", line))
    files = list(dict.fromkeys(e.file for e in errors if e.file))
    for path in files:
        stderr_line(ERROR, "failed to load configuration file '%s'" % path)
    stderr_line(ERROR, "pfm initialization failed")
    return EX_CONFIG


def load_config(args, cfg):
    """Quick mode (--app, --listen, --workers, --user, --demo), else -y, else
    PREFIX/etc/pfm.conf, else /etc/pfm/pfm.conf. Without any of them pfm
    refuses to start: it serves the demo only when asked to."""
    if args.app or args.listen or args.workers is not None or args.user or args.demo:
        if args.config:
            raise cfg.ConfigError("--app/--listen/--workers/--user/--demo run one pool without "
                                  "a config file; they cannot be combined with -y")
        if args.demo and args.app:
            raise cfg.ConfigError("--demo serves pfm.demo:app; it cannot be combined with --app")
        return quick_mode_config(args, cfg)
    path = args.config
    if path is None and args.prefix:
        path = os.path.join(args.prefix, "etc", "pfm.conf")
    if path is None and os.path.exists(DEFAULT_CONFIG):
        path = DEFAULT_CONFIG
    if path is None:
        raise cfg.ConfigError("no configuration file: %s does not exist. Give one with -y "
                              "FILE, run an application with --app MODULE:CALLABLE, or serve "
                              "the demo application with --demo" % DEFAULT_CONFIG)
    return cfg.load(os.path.abspath(path), prefix=args.prefix)


# Quick mode's flags and the pool directives they set, for error messages.
QUICK_FLAGS = {"app": "--app", "listen": "--listen", "pm.max_children": "--workers",
               "user": "--user"}


def quick_mode_config(args, cfg):
    """One pool from the flags, with output caught and undecorated (as a
    gunicorn user expects to see print()); errors name the flag, not the
    directive behind it."""
    app = args.app or "pfm.demo:app"
    if app == "pfm.demo:app":
        why = "--demo" if args.demo else "--app" if args.app else "quick mode without --app"
        stderr_line(NOTICE, "serving the demo application pfm.demo:app (%s)" % why)
    listen = args.listen or "127.0.0.1:9000"
    workers = 2 if args.workers is None else args.workers
    extra = {"user": args.user} if args.user else {}
    try:
        return cfg.quick_config(app, listen, workers, catch_workers_output=True,
                                decorate_workers_output=False, **extra)
    except cfg.ConfigError as e:
        flag = QUICK_FLAGS.get(e.directive or "")
        if flag is None:
            raise
        values = {"--app": app, "--listen": listen, "--workers": workers, "--user": args.user}
        reason = re.sub(r"^\[pool www\] ", "", e.message)
        # "pm.max_children(0) must be..." / "app 'x': no module..." -> the reason alone
        reason = re.sub(r"^%s(\([^)]*\)|\s+'[^']*':?)\s*" % re.escape(e.directive), "",
                        reason)
        raise cfg.ConfigError("%s %s: %s" % (flag, shlex.quote(str(values[flag])), reason)) \
            from None
