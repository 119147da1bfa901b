"""A ``%%chat --compare`` cell: the grid, one runner turn per variant at once, the output.

Live front ends get a `CompareView` (columns side by side, Stop per column and for all, Keep
this); headless runs wait, keep ``--keep N`` (default 1) and show every variant in a static
bundle (plus the nbchat panel document, so the extension draws the comparison in saved
notebooks).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from IPython.core.error import UsageError

from .flags import flag_message
from .grid import expand_grid, variant_fields
from .kernel import is_live

if TYPE_CHECKING:  # pragma: no cover
    from .host import ChatHost

__all__ = ["run_compare"]


def _variants(
    m: ChatHost, args: Any, params: dict[str, Any], backend_name: str
) -> list[tuple[dict[str, Any], dict[str, Any], Any]]:
    """(varied, params, backend) per variant; a backend that varies without a model named
    gets its own (`compose` asks the registry's model policy)."""
    out = []
    for varied in expand_grid(args.compare):
        name = m.backend_name(varied["backend"]) if "backend" in varied else backend_name
        p = {**params, **variant_fields(varied)}
        if name != backend_name and "model" not in varied and not args.model:
            p.pop("model", None)
        out.append((varied, p, m.backend(name, p.get("model"))))
    return out


def run_compare(
    m: ChatHost,
    args: Any,
    prompt: str,
    conv: Any,
    name: str,
    params: dict[str, Any],
    tools: list[Any] | None,
    info: dict[str, Any],
    backend_name: str,
) -> None:
    from ..comparison import start_comparison, variant_label
    from ..errors import ValidationError

    variants = _variants(m, args, params, backend_name)
    keep = 1 if args.keep is None else args.keep
    if not 1 <= keep <= len(variants):
        raise UsageError(f"--keep: {keep}; allowed: 1..{len(variants)} (one per variant)")
    if args.dry_run:
        return _dry_run(conv, prompt, variants, tools, info)
    live = is_live(m.shell, m.settings.live)
    approve_all = m.settings.auto_approve_tools
    view = None
    if live:
        from .compareview import CompareView

        view = CompareView(prompt, [v for v, _, _ in variants], [p for _, p, _ in variants], name)
        view.display()
    m.shell.user_ns[name] = conv
    try:
        handle = start_comparison(
            conv,
            prompt,
            variants,
            cell=info,
            listeners=view.listeners() if view is not None else None,
            tools=tools,
            approve=(view.approvers() if view is not None else None) if not approve_all else None,
            keep=keep - 1,
            on_all_done=view.all_done if view is not None else None,
        )
    except ValidationError as exc:
        i = getattr(exc, "variant", 0)
        label = variant_label(variants[i][0])
        if view is not None:
            view.close()
        raise UsageError(f"--compare {label}: {flag_message(exc)}") from None
    if view is not None:
        from .interrupt import install, watch

        view.attach(handle)
        watch(conv)  # Kernel -> Interrupt stops the variants too
        install(m.shell)
        if args.wait:
            handle.wait()
        return None
    try:
        handle.wait()
    except KeyboardInterrupt:
        handle.cancel("interrupted")
        handle.wait(2)
        _show(handle.comparison)
        raise
    _show(handle.comparison)
    handle.turn.raise_for_status()
    return None


def _dry_run(
    conv: Any, prompt: str, variants: list[Any], tools: list[Any] | None, info: dict[str, Any]
) -> None:
    from IPython.display import display

    from ..comparison import variant_label
    from ..compose import build_request
    from ..errors import ValidationError
    from .dryrun import show_request

    for varied, p, backend in variants:
        try:
            composed = build_request(conv, prompt, p, backend=backend, tools=tools, cell=info)
        except ValidationError as exc:
            raise UsageError(f"--compare {variant_label(varied)}: {flag_message(exc)}") from None
        display({"text/plain": f"variant {variant_label(varied)}"}, raw=True)
        show_request(composed.request)


def _show(comparison: Any) -> None:
    from IPython.display import display

    from .comparebundle import compare_bundle

    display(compare_bundle(comparison), raw=True)
