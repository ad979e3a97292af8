"""``scdgm``: the command line, for pipelines (``scdgm vae in.h5ad out.h5ad``) and the README's demo.

Every function of ``dgm.tl`` and ``dgm.pp`` is a subcommand; its options come from its signature and
its numpydoc ``Parameters`` section, read when the command runs.
"""

from __future__ import annotations

import argparse
import collections.abc
import importlib
import inspect
import json
import os
import re
import secrets
import shutil
import sys
import textwrap
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

if typing.TYPE_CHECKING:
    from collections.abc import Callable

    from anndata import AnnData

NAMESPACES = ("tl", "pp")
"""Namespaces of ``scdgm`` whose ``__all__`` become subcommands, the first winning a name clash."""

INPUT_SUFFIXES = (".h5ad", ".zarr")
NONE_WORDS = ("none", "None")
USER_ERRORS = (ValueError, LookupError, TypeError, OSError)
"""Exceptions reported as one line (exit code 2) rather than a traceback, with scdgm's own exceptions."""

_RESERVED_OPTIONS = {"help", "force", "debug", "version"}
_SKIPPED = {"copy"}
_SEQUENCE_ORIGINS = {
    list,
    tuple,
    set,
    frozenset,
    collections.abc.Sequence,
    collections.abc.MutableSequence,
    collections.abc.Collection,
    collections.abc.Iterable,
    collections.abc.Set,
}
_MAPPING_ORIGINS = {dict, collections.abc.Mapping, collections.abc.MutableMapping}
_SECTION = re.compile(r"^-{3,}$")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults shown after each option (not after plain flags); the tool's description keeps its paragraphs."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.nargs == 0 and not isinstance(action, argparse.BooleanOptionalAction):
            return action.help
        return super()._get_help_string(action)


# ----------------------------------------------------------------------------------------------------
# numpydoc


def _clean_rst(text: str) -> str:
    """Plain text from numpydoc markup: roles and backticks dropped, whitespace collapsed."""
    text = re.sub(r":[a-z:]+:`~?([^`]+)`", r"\1", text)
    text = re.sub(r"`{1,2}([^`]+)`{1,2}", r"\1", text)
    return " ".join(text.split())


def _is_section(lines: list[str], index: int) -> bool:
    return (
        index + 1 < len(lines)
        and bool(lines[index].strip())
        and not lines[index][0].isspace()
        and bool(_SECTION.match(lines[index + 1].strip()))
    )


def parameter_docs(func: Callable[..., Any]) -> dict[str, str]:
    """Descriptions of the parameters in the numpydoc ``Parameters`` section of ``func``.

    Parameters
    ----------
    func
        A documented function. A line ``a, b, c`` documents several parameters with one description;
        ``name : type`` lines are understood too.

    Returns
    -------
    Parameter name (without ``*``) to its description as one line of plain text.
    """
    lines = (inspect.getdoc(func) or "").splitlines()
    start = next((i + 2 for i in range(len(lines)) if lines[i].strip() == "Parameters" and _is_section(lines, i)), None)
    if start is None:
        return {}
    texts: dict[str, list[str]] = {}
    names: list[str] = []
    for index in range(start, len(lines)):
        line = lines[index]
        if _is_section(lines, index):
            break
        if not line.strip():
            continue
        if not line[0].isspace():
            header = line.split(" : ")[0]
            names = [name.strip().lstrip("*") for name in header.split(",") if name.strip()]
            for name in names:
                texts.setdefault(name, [])
        else:
            for name in names:
                texts[name].append(line.strip())
    return {name: _clean_rst(" ".join(text)) for name, text in texts.items()}


def _description(func: Callable[..., Any]) -> tuple[str, str]:
    """The summary line and the text before ``Parameters``, in filled paragraphs."""
    doc = inspect.getdoc(func) or ""
    lines = doc.splitlines()
    end = next((i for i in range(len(lines)) if _is_section(lines, i)), len(lines))
    paragraphs = [_clean_rst(p) for p in "\n".join(lines[:end]).split("\n\n") if p.strip()]
    summary = paragraphs[0] if paragraphs else ""
    return summary, "\n\n".join(textwrap.fill(p, width=100) for p in paragraphs)


def _escape(text: str) -> str:
    """Protect ``%`` from argparse's %-formatting of help texts."""
    return text.replace("%", "%%")


# ----------------------------------------------------------------------------------------------------
# annotations -> argparse


@dataclass
class _Type:
    """What a parameter's annotation allows on a command line."""

    nullable: bool = False
    boolean: bool = False
    anndata: bool = False
    mapping: bool = False
    scalars: list[type] = field(default_factory=list)
    literals: list[Any] = field(default_factory=list)
    sequence: _Type | None = None
    container: type = list
    unsupported: list[Any] = field(default_factory=list)

    @property
    def supported(self) -> bool:
        return bool(
            self.boolean or self.anndata or self.mapping or self.scalars or self.literals or self.sequence is not None
        )

    @property
    def only_boolean(self) -> bool:
        return self.boolean and not (
            self.anndata or self.mapping or self.scalars or self.literals or self.sequence is not None
        )


def _analyse(annotation: Any, into: _Type | None = None) -> _Type:
    """Sort the members of ``annotation`` (unions flattened) into what a command line can carry."""
    from anndata import AnnData

    kind = _Type() if into is None else into
    origin = get_origin(annotation)
    if origin is typing.Annotated:
        return _analyse(get_args(annotation)[0], kind)
    if origin in (typing.Union, types.UnionType):
        for member in get_args(annotation):
            _analyse(member, kind)
    elif annotation is None or annotation is type(None):
        kind.nullable = True
    elif annotation is inspect.Parameter.empty:
        kind.scalars.append(str)
    elif annotation is bool:
        kind.boolean = True
    elif annotation in (int, float, str):
        kind.scalars.append(annotation)
    elif isinstance(annotation, type) and issubclass(annotation, os.PathLike):
        kind.scalars.append(Path)
    elif origin is Literal:
        kind.literals.extend(v for v in get_args(annotation) if isinstance(v, str | int | float | bool))
    elif annotation in _SEQUENCE_ORIGINS or origin in _SEQUENCE_ORIGINS:
        args = [a for a in get_args(annotation) if a is not Ellipsis]
        if len(args) > 1:  # a fixed-length tuple: its members' union
            element = _Type()
            for arg in args:
                _analyse(arg, element)
        else:
            element = _analyse(args[0] if args else str)
        if element.supported and element.sequence is None and not element.anndata:
            kind.sequence = element
            kind.container = tuple if (origin or annotation) is tuple else list
        else:
            kind.unsupported.append(annotation)
    elif annotation in _MAPPING_ORIGINS or origin in _MAPPING_ORIGINS:
        kind.mapping = True
    elif isinstance(annotation, type) and issubclass(annotation, AnnData):
        kind.anndata = True
    else:  # Any, arrays, models, callables
        kind.unsupported.append(annotation)
    return kind


def _parse_value(text: str, kind: _Type) -> Any:
    """One command-line word as a value of ``kind``; ``none`` is None where the annotation allows it."""
    if kind.nullable and text in NONE_WORDS:
        return None
    for value in kind.literals:
        if text == str(value):
            return value
    if int in kind.scalars:
        try:
            return int(text)
        except ValueError:
            pass
    if float in kind.scalars:
        try:
            return float(text)
        except ValueError:
            pass
    if kind.boolean and text.lower() in {"true", "false"}:
        return text.lower() == "true"
    if str in kind.scalars:
        return text
    if Path in kind.scalars:
        return Path(text)
    msg = f"invalid value {text!r} (expected {_expected(kind)})"
    raise argparse.ArgumentTypeError(msg)


def _converter(kind: _Type) -> Callable[[str], Any]:
    element = kind if kind.sequence is None else _merged_element(kind)

    def convert(text: str) -> Any:
        if kind.mapping:
            if kind.nullable and text in NONE_WORDS:
                return None
            try:
                value = json.loads(text)
            except json.JSONDecodeError as error:
                msg = f"invalid JSON {text!r} ({error.msg})"
                raise argparse.ArgumentTypeError(msg) from None
            if not isinstance(value, dict):
                msg = f"expected a JSON object such as '{{\"key\": 1}}', not {text!r}"
                raise argparse.ArgumentTypeError(msg)
            return value
        return _parse_value(text, element)

    return convert


def _merged_element(kind: _Type) -> _Type:
    """Type of each word of a ``nargs="+"`` option: the sequence's element or a scalar member."""
    element = kind.sequence or _Type()
    return _Type(
        nullable=kind.nullable or element.nullable,
        boolean=kind.boolean or element.boolean,
        scalars=[*kind.scalars, *element.scalars],
        literals=[*kind.literals, *element.literals],
    )


def _expected(kind: _Type) -> str:
    words = [f"{v!r}" for v in kind.literals]
    words += [{int: "an integer", float: "a number", str: "text", Path: "a path"}[s] for s in kind.scalars]
    if kind.boolean:
        words.append("true/false")
    if kind.nullable:
        words.append("none")
    return ", ".join(dict.fromkeys(words))


def _choices(kind: _Type) -> list[Any] | None:
    """Literal values as argparse choices, where nothing else (text, numbers) is allowed."""
    if not kind.literals or kind.scalars or kind.boolean:
        return None
    return [*kind.literals, None] if kind.nullable else list(kind.literals)


def _type_hints(func: Callable[..., Any]) -> dict[str, Any]:
    """Evaluated annotations of ``func``; one that cannot be evaluated counts as ``Any``."""
    target = inspect.unwrap(func)
    try:
        return typing.get_type_hints(target)
    except (NameError, TypeError, AttributeError, SyntaxError):
        namespace = {**vars(typing), **getattr(target, "__globals__", {})}
        hints = {}
        for name, annotation in getattr(target, "__annotations__", {}).items():
            try:
                hints[name] = eval(annotation, namespace) if isinstance(annotation, str) else annotation
            except (NameError, TypeError, AttributeError, SyntaxError):
                hints[name] = Any
        return hints


@dataclass(frozen=True)
class _Option:
    """A parameter of a tool as the command line carries it."""

    name: str
    kind: _Type
    default: Any = None
    positional_only: bool = False
    var_keyword: bool = False

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")

    def value(self, args: argparse.Namespace, references: dict[str, AnnData]) -> Any:
        """The argument to pass: files of ``--reference``-like options read, lists of one word unpacked."""
        value = getattr(args, self.name)
        if self.kind.anndata and value is not None:
            return references[self.name]
        if self.kind.sequence is not None and isinstance(value, list) and value is not self.default:
            if value == [None]:
                return None
            if len(value) == 1 and (self.kind.scalars or self.kind.literals or self.kind.boolean):
                return value[0]
            return self.kind.container(value)
        return value


def _add_parameters(parser: argparse.ArgumentParser, func: Callable[..., Any], title: str) -> list[_Option]:
    """Add one argument per parameter of ``func`` that a command line can carry; return them in order."""
    hints = _type_hints(func)
    docs = parameter_docs(func)
    group = parser.add_argument_group(title)
    options = []
    for index, param in enumerate(inspect.signature(func).parameters.values()):
        flag = param.name.replace("_", "-")
        if index == 0 or param.name in _SKIPPED or flag in _RESERVED_OPTIONS or param.kind is param.VAR_POSITIONAL:
            continue
        text = docs.get(param.name, "")
        required = param.default is param.empty
        if param.kind is param.VAR_KEYWORD:
            option = _Option(param.name, _Type(mapping=True), default={}, var_keyword=True)
            help_text = f"{text} Given as a JSON object, e.g. '{{\"max_epochs\": 50}}'.".strip()
            group.add_argument(
                option.flag, dest=param.name, type=_converter(option.kind), default={}, metavar="JSON", help=help_text
            )
            options.append(option)
            continue
        kind = _analyse(hints.get(param.name, param.annotation))
        if not kind.supported:
            if not required:
                continue  # e.g. a trained Python object or an array: not for a command line
            kind = _Type(scalars=[str])
        option = _Option(param.name, kind, param.default, positional_only=param.kind is param.POSITIONAL_ONLY)
        settings: dict[str, Any] = {"help": text}
        if kind.nullable and not required and param.default is not None and not kind.only_boolean:
            settings["help"] += " 'none' passes None."
        if kind.anndata:
            settings["help"] += " Read from an .h5ad file or a .zarr directory."
            settings.update(type=_converter(_Type(nullable=kind.nullable, scalars=[str])), metavar="PATH")
        elif kind.only_boolean:
            settings["action"] = argparse.BooleanOptionalAction
        else:
            element = kind if kind.sequence is None else _merged_element(kind)
            settings.update(type=_converter(kind), choices=_choices(element))
            if kind.sequence is not None:
                settings["nargs"] = "+"
            if kind.mapping:
                settings["metavar"] = "JSON"
                settings["help"] += " Given as a JSON object."
            elif settings["choices"] is None:
                settings["metavar"] = param.name.upper()
        settings["help"] = _escape(settings["help"])
        positional = param.kind in (param.POSITIONAL_ONLY, param.POSITIONAL_OR_KEYWORD) and required
        if positional and not kind.anndata and not kind.only_boolean:
            if settings.get("metavar"):
                settings["metavar"] = param.name
            group.add_argument(param.name, **settings)
        elif required:
            group.add_argument(option.flag, dest=param.name, required=True, default=argparse.SUPPRESS, **settings)
        else:
            group.add_argument(option.flag, dest=param.name, default=param.default, **settings)
        options.append(option)
    return options


# ----------------------------------------------------------------------------------------------------
# files


def _suffix(path: Path) -> str:
    return path.suffix.lower()


def check_input(text: str, what: str = "input") -> Path:
    """Check that ``text`` names a readable AnnData file before anything is read or trained.

    Parameters
    ----------
    text
        Path of an ``.h5ad`` file or a ``.zarr`` directory.
    what
        How the path is named in error messages.

    Returns
    -------
    The path.

    Raises
    ------
    FileNotFoundError
        The path does not exist.
    ValueError
        It is neither an HDF5 ``.h5ad`` file nor a ``.zarr`` directory.
    PermissionError
        It cannot be read.
    """
    import h5py

    path = Path(text)
    if not path.exists():
        msg = f"{what} {text!r} does not exist."
        raise FileNotFoundError(msg)
    if _suffix(path) not in INPUT_SUFFIXES:
        msg = f"{what} {text!r} is neither an .h5ad file nor a .zarr directory."
        raise ValueError(msg)
    if _suffix(path) == ".zarr" and not path.is_dir():
        msg = f"{what} {text!r} is not a directory, as a .zarr store must be."
        raise ValueError(msg)
    if not os.access(path, os.R_OK):
        msg = f"{what} {text!r} is not readable."
        raise PermissionError(msg)
    if _suffix(path) == ".h5ad" and not (path.is_file() and h5py.is_hdf5(path)):
        msg = f"{what} {text!r} is not an HDF5 file, as an .h5ad file must be."
        raise ValueError(msg)
    return path


def check_output(text: str, *, force: bool = False) -> Path:
    """Check that ``text`` can be written before anything is read or trained.

    Parameters
    ----------
    text
        Path of the ``.h5ad`` file or ``.zarr`` directory to write.
    force
        Allow replacing an existing output.

    Returns
    -------
    The path.

    Raises
    ------
    ValueError
        The suffix is neither ``.h5ad`` nor ``.zarr``.
    FileNotFoundError
        Its directory does not exist.
    PermissionError
        Its directory is not writable.
    IsADirectoryError
        An ``.h5ad`` output is a directory.
    FileExistsError
        It exists and ``force`` is false.
    """
    path = Path(text)
    if _suffix(path) not in INPUT_SUFFIXES:
        msg = f"output {text!r} must end with .h5ad (or .zarr for a zarr store)."
        raise ValueError(msg)
    parent = path.parent
    if not parent.is_dir():
        msg = f"the directory of output {text!r} does not exist: {str(parent)!r}."
        raise FileNotFoundError(msg)
    if not os.access(parent, os.W_OK | os.X_OK):
        msg = f"the directory of output {text!r} is not writable: {str(parent)!r}."
        raise PermissionError(msg)
    if path.is_dir() and _suffix(path) != ".zarr":
        msg = f"output {text!r} is a directory."
        raise IsADirectoryError(msg)
    if path.exists() and not force:
        msg = f"output {text!r} exists; pass --force to overwrite it."
        raise FileExistsError(msg)
    return path


def read(path: Path) -> AnnData:
    """Read an ``.h5ad`` file or a ``.zarr`` directory checked by :func:`check_input`."""
    import anndata as ad

    return ad.read_zarr(path) if _suffix(path) == ".zarr" else ad.read_h5ad(path)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write(adata: AnnData, path: Path) -> None:
    """Write ``adata`` to ``path`` through a temporary file in the same directory, then move it in place.

    A failure leaves no half-written output and any earlier file at ``path`` untouched.

    Parameters
    ----------
    adata
        What to write.
    path
        An ``.h5ad`` file or a ``.zarr`` directory.
    """
    stem = f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}"
    temporary = path.with_name(f"{stem}.tmp{path.suffix}")
    try:
        if _suffix(path) == ".zarr":
            adata.write_zarr(temporary)
            if path.exists() or path.is_symlink():
                old = path.with_name(f"{stem}.old")
                os.replace(path, old)  # a directory cannot be replaced in one step
                os.replace(temporary, path)
                _remove(old)
            else:
                os.replace(temporary, path)
        else:
            adata.write_h5ad(temporary)
            os.replace(temporary, path)
    finally:
        _remove(temporary)


# ----------------------------------------------------------------------------------------------------
# running


def _run_tool(args: argparse.Namespace, *, func: Callable[..., Any], options: list[_Option]) -> int:
    """Check the paths, read, run ``func`` and write its result."""
    import pandas as pd
    from anndata import AnnData

    from ._settings import logger

    source = check_input(args.scdgm_input)
    reference_paths = {
        option.name: check_input(getattr(args, option.name), option.flag)
        for option in options
        if option.kind.anndata and getattr(args, option.name) is not None
    }
    target = check_output(args.scdgm_output, force=args.scdgm_force)

    adata = read(source)
    references = {name: read(path) for name, path in reference_paths.items()}
    positional: list[Any] = []
    keywords: dict[str, Any] = {}
    for option in options:
        value = option.value(args, references)
        if option.var_keyword:
            keywords.update(value)
        elif option.positional_only:
            positional.append(value)
        else:
            keywords[option.name] = value
    result = func(adata, *positional, **keywords)

    if isinstance(result, pd.DataFrame):
        print(result.to_string())
    written = result if isinstance(result, AnnData) else adata
    write(written, target)
    logger.info(f"wrote {target} ({written.n_obs} cells x {written.n_vars} features)")
    return 0


def _is_user_error(error: BaseException) -> bool:
    if isinstance(error, USER_ERRORS):
        return True
    return any(c.__module__ == "scdgm" or c.__module__.startswith("scdgm.") for c in type(error).__mro__)


def _one_line(error: BaseException) -> str:
    text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
    return " ".join(text.split()) or type(error).__name__


def _demo(args: argparse.Namespace) -> int:
    import anndata as ad
    import matplotlib

    matplotlib.use("agg")
    import matplotlib.pyplot as plt

    import scdgm as dgm
    from scdgm._metrics import knn_label_accuracy

    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    adata = dgm.datasets.pbmc68k()
    print(f"pbmc68k: {adata.n_obs} cells x {adata.n_vars} genes, integer counts in .X and .layers['counts']")
    print(adata.obs["cell_type"].value_counts().to_string())

    dgm.tl.vae(adata, likelihood=args.likelihood, max_epochs=args.max_epochs, seed=args.seed)
    metrics = adata.uns["vae"]["metrics"]
    accuracy = knn_label_accuracy(adata.obsm["X_vae"], adata.obs["cell_type"].to_numpy(), seed=args.seed)
    print(
        f"\nVAE ({args.likelihood}): {metrics['n_epochs']} epochs in {metrics['seconds']:.1f} s "
        f"({metrics['train_cells_per_second']:.0f} training cells/s)"
    )
    print(f"held-out negative ELBO per cell: {metrics['validation_elbo']:.2f}")
    print(f"5-fold kNN (k=15) cell-type accuracy on X_vae: {accuracy:.3f}")

    dgm.pl.latent(adata, color="cell_type", show=False)
    plt.savefig(out / "latent_umap.png", dpi=120, bbox_inches="tight")
    plt.close("all")
    dgm.pl.history(adata, show=False)
    plt.savefig(out / "history.png", dpi=120, bbox_inches="tight")
    plt.close("all")
    adata.write_h5ad(out / "pbmc68k_vae.h5ad")
    reread = ad.read_h5ad(out / "pbmc68k_vae.h5ad")
    print(
        f"\nwrote {out}/latent_umap.png, {out}/history.png, {out}/pbmc68k_vae.h5ad (model inside: {'model' in reread.uns['vae']})"
    )
    return 0


def tools() -> dict[str, tuple[str, Callable[..., Any]]]:
    """The functions the command line runs: subcommand name to namespace and function.

    Returns
    -------
    Every name of ``__all__`` of :data:`NAMESPACES`, looked up now (so a new tool is a subcommand).
    """
    found: dict[str, tuple[str, Callable[..., Any]]] = {}
    for namespace in NAMESPACES:
        module = importlib.import_module(f"scdgm.{namespace}")
        for name in module.__all__:
            func = getattr(module, name)
            if callable(func) and name not in found and name != "demo":
                found[name] = (namespace, func)
    return found


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``scdgm`` command, generated from the tools' signatures and docstrings."""
    from ._results import package_version

    parser = argparse.ArgumentParser(
        prog="scdgm",
        description="Run a tool of scdgm on an AnnData file: scdgm <command> in.h5ad out.h5ad [options].\n"
        "Every function of dgm.tl and dgm.pp is a command; see scdgm <command> --help.",
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {package_version()}")
    commands = parser.add_subparsers(dest="scdgm_command", required=True, metavar="command")

    demo = commands.add_parser("demo", help="train a VAE on the bundled PBMC data and save plots")
    demo.add_argument("--output", default="demo_output")
    demo.add_argument("--likelihood", default="nb")
    demo.add_argument("--max-epochs", type=int, default=None)
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(scdgm_run=_demo, scdgm_tool="demo")

    for name, (namespace, func) in tools().items():
        summary, description = _description(func)
        qualname = f"dgm.{namespace}.{name}"
        sub = commands.add_parser(
            name,
            aliases=[name.replace("_", "-")] if "_" in name else [],
            help=_escape(summary),
            description=f"{description}\n\nReads INPUT, runs {qualname} and writes the result to OUTPUT.",
            formatter_class=_HelpFormatter,
        )
        sub.add_argument("scdgm_input", metavar="input", help="AnnData to read: an .h5ad file or a .zarr directory.")
        sub.add_argument(
            "scdgm_output",
            metavar="output",
            help="Where to write the result: an .h5ad file or a .zarr directory (written under a temporary "
            "name, then moved in place).",
        )
        options = _add_parameters(sub, func, f"options of {qualname}")
        own = sub.add_argument_group("command line")
        own.add_argument("--force", dest="scdgm_force", action="store_true", help="Overwrite an existing output.")
        own.add_argument(
            "--debug", dest="scdgm_debug", action="store_true", help="Show the traceback of an error, not one line."
        )
        sub.set_defaults(
            scdgm_run=lambda args, func=func, options=options: _run_tool(args, func=func, options=options),
            scdgm_tool=name,
        )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``scdgm`` command line.

    Parameters
    ----------
    argv
        Arguments after the program name; default ``sys.argv[1:]``.

    Returns
    -------
    The exit status: 0 on success, 2 for a usage or user error (one line on stderr), 130 when interrupted.
    """
    from ._settings import settings

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version and usage errors
        return stop.code if isinstance(stop.code, int) else int(stop.code is not None)
    progress_bar = settings.progress_bar
    settings.progress_bar = sys.stderr.isatty()  # no carriage returns in a pipeline's log
    try:
        return int(args.scdgm_run(args) or 0)
    except KeyboardInterrupt:
        print(f"scdgm {args.scdgm_tool}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        if getattr(args, "scdgm_debug", False) or not _is_user_error(error):
            raise
        print(f"scdgm {args.scdgm_tool}: error: {_one_line(error)}", file=sys.stderr)
        return 2
    finally:
        settings.progress_bar = progress_bar


if __name__ == "__main__":
    sys.exit(main())
