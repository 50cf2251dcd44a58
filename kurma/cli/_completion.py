"""`kurmactl completion bash|zsh`: a shell completion script made from the argparse tree.

The tree is flattened into five tables keyed by command path ("kurmactl image import"):
subcommands, options, options that take a value, the choices of an option, and what the
positional arguments are (pods, files). The script walks the words typed so far to find
the path, then offers from the tables; pod names come from `kurmactl ps -a -o name` at
completion time. Both shells get the same tables, so they complete the same things.

    source <(kurmactl completion bash)        # or save it in /etc/bash_completion.d/
    source <(kurmactl completion zsh)         # after compinit; or save it as _kurmactl in $fpath
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass, field

ROOT = "kurmactl"
FILE_METAVARS = {"ACI", "FILE", "KEYFILE"}


def add_command(commands: argparse._SubParsersAction) -> None:
    completion = commands.add_parser(
        "completion",
        help="print a shell completion script (bash or zsh)",
        description="Print a completion script: `source <(kurmactl completion bash)`.",
    )
    completion.add_argument("shell", choices=["bash", "zsh"])
    completion.set_defaults(run=run_completion)


def run_completion(args: argparse.Namespace) -> int:
    from .main import build_parser

    tables = collect(build_parser())
    sys.stdout.write(bash_script(tables) if args.shell == "bash" else zsh_script(tables))
    return 0


@dataclass
class Tables:
    """What to offer at each command path."""

    subs: dict[str, list[str]] = field(default_factory=dict)
    opts: dict[str, list[str]] = field(default_factory=dict)
    valued: dict[str, list[str]] = field(default_factory=dict)
    kind: dict[str, str] = field(default_factory=dict)
    choices: dict[str, list[str]] = field(default_factory=dict)  # "path option" -> choices


def collect(
    parser: argparse.ArgumentParser, path: str = ROOT, tables: Tables | None = None
) -> Tables:
    """Walk the parser and its subparsers (aliases included) into Tables."""
    tables = Tables() if tables is None else tables
    opts, valued = [], []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            tables.subs[path] = list(action.choices)
            for name, sub in action.choices.items():
                collect(sub, f"{path} {name}", tables)
        elif action.option_strings:
            opts.extend(action.option_strings)
            if action.nargs != 0:
                valued.extend(action.option_strings)
            if action.choices:
                for option in action.option_strings:
                    tables.choices[f"{path} {option}"] = [str(c) for c in action.choices]
        elif (kind := _kind(action)) and path not in tables.kind:
            tables.kind[path] = kind
    tables.opts[path] = opts
    tables.valued[path] = valued
    return tables


def _kind(action: argparse.Action) -> str:
    metavar = action.metavar if isinstance(action.metavar, str) else ""
    if metavar == "POD":
        return "pod"
    if metavar in FILE_METAVARS or getattr(action.type, "__name__", "") in ("Path", "PosixPath"):
        return "file"
    return ""


def _assoc(name: str, table: dict[str, list[str]] | dict[str, str], shell: str) -> str:
    """One associative array of the script, its entries sorted (stable output)."""
    entries = []
    for key in sorted(table):
        value = table[key]
        text = value if isinstance(value, str) else " ".join(value)
        if shell == "bash":
            entries.append(f"    [{shlex.quote(key)}]={shlex.quote(text)}")
        else:
            entries.append(f"    {shlex.quote(key)} {shlex.quote(text)}")
    body = "\n".join(entries)
    if shell == "bash":
        return f"declare -gA {name}=(\n{body}\n)"
    return f"typeset -gA {name}\n{name}=(\n{body}\n)"


def _tables(tables: Tables, shell: str) -> str:
    return "\n".join(
        _assoc(f"_kurmactl_{name}", getattr(tables, name), shell)
        for name in ("subs", "opts", "valued", "kind", "choices")
    )


# The walk is the same in both shells: skip options and their values, follow subcommands;
# after `--` (a command for the pod) offer nothing.
_BASH = r"""
_kurmactl_pods() {
    command kurmactl ps -a -o name 2>/dev/null
}
_kurmactl() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]}
    local cmdpath=kurmactl word i
    COMPREPLY=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        word=${COMP_WORDS[i]}
        [[ $word == -- ]] && return 0
        [[ $word == -* ]] && continue
        [[ " ${_kurmactl_valued[$cmdpath]} " == *" ${COMP_WORDS[i-1]} "* ]] && continue
        [[ " ${_kurmactl_subs[$cmdpath]} " == *" $word "* ]] && cmdpath="$cmdpath $word"
    done
    if [[ -n ${_kurmactl_choices["$cmdpath $prev"]+set} ]]; then
        COMPREPLY=($(compgen -W "${_kurmactl_choices["$cmdpath $prev"]}" -- "$cur"))
    elif [[ " ${_kurmactl_valued[$cmdpath]} " == *" $prev "* ]]; then
        COMPREPLY=($(compgen -f -- "$cur"))
    elif [[ $cur == -* ]]; then
        COMPREPLY=($(compgen -W "${_kurmactl_opts[$cmdpath]}" -- "$cur"))
    elif [[ -n ${_kurmactl_subs[$cmdpath]} ]]; then
        COMPREPLY=($(compgen -W "${_kurmactl_subs[$cmdpath]}" -- "$cur"))
    else
        case ${_kurmactl_kind[$cmdpath]} in
            pod) COMPREPLY=($(compgen -W "$(_kurmactl_pods)" -- "$cur")) ;;
            file) COMPREPLY=($(compgen -f -- "$cur")) ;;
        esac
    fi
    return 0
}
complete -F _kurmactl kurmactl
"""

# `path` is special in zsh (tied to $PATH), hence `cmdpath` in both scripts.
_ZSH = r"""
_kurmactl() {
    local cur=${words[CURRENT]} prev=${words[CURRENT-1]}
    local cmdpath=kurmactl word i
    for ((i = 2; i < CURRENT; i++)); do
        word=${words[i]}
        [[ $word == -- ]] && return 0
        [[ $word == -* ]] && continue
        [[ " ${_kurmactl_valued[$cmdpath]} " == *" ${words[i-1]} "* ]] && continue
        [[ " ${_kurmactl_subs[$cmdpath]} " == *" $word "* ]] && cmdpath="$cmdpath $word"
    done
    if (( ${+_kurmactl_choices[$cmdpath $prev]} )); then
        compadd -- ${=_kurmactl_choices[$cmdpath $prev]}
    elif [[ " ${_kurmactl_valued[$cmdpath]} " == *" $prev "* ]]; then
        _files
    elif [[ $cur == -* ]]; then
        compadd -- ${=_kurmactl_opts[$cmdpath]}
    elif [[ -n ${_kurmactl_subs[$cmdpath]} ]]; then
        compadd -- ${=_kurmactl_subs[$cmdpath]}
    else
        case ${_kurmactl_kind[$cmdpath]} in
            pod) compadd -- ${(f)"$(command kurmactl ps -a -o name 2>/dev/null)"} ;;
            file) _files ;;
        esac
    fi
}
if [[ ${zsh_eval_context[-1]} == loadautofunc ]]; then
    _kurmactl "$@"
else
    compdef _kurmactl kurmactl
fi
"""


def bash_script(tables: Tables) -> str:
    header = "# kurmactl completion for bash: source <(kurmactl completion bash)\n"
    return header + _tables(tables, "bash") + "\n" + _BASH


def zsh_script(tables: Tables) -> str:
    header = "#compdef kurmactl\n# kurmactl completion for zsh: source <(kurmactl completion zsh)\n"
    return header + _tables(tables, "zsh") + "\n" + _ZSH
