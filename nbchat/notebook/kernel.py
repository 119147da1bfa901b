"""What nbchat needs from the kernel: the current request, live detection, output routing.

* `parent_message`: the execute_request of the running cell (header, metadata with the front
  end's ``cellId``, content with ``allow_stdin``), or None without a kernel. Captured on the
  main thread inside the cell; the worker later attributes its output to it.
* `is_live`: whether an interactive front end (one that renders widgets as they change) ran the
  cell: JupyterLab/Notebook 7/VS Code send ``allow_stdin: true``; nbclient (nbconvert
  --execute, papermill) sends false. No kernel (terminal IPython) is not live.
* `set_thread_parent` / `publish`: route a worker thread's output to the cell that started the
  turn (ipykernel 6 keeps one global parent, 7 one per thread with a fall-back to the latest
  cell; tests/notebook/test_kernel_versions.py runs both).

Only public ipykernel APIs are used: ``kernel.get_parent``, ``shell.set_thread_parent`` /
``set_parent``, ``kernel.session.send``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["parent_message", "is_live", "cell_info", "set_thread_parent", "publish"]


def _shell(shell: Any) -> Any:
    if shell is not None:
        return shell
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover
        return None
    return get_ipython()


def parent_message(shell: Any = None) -> dict[str, Any] | None:
    """The current execute_request (header, metadata, content), or None without a kernel.

    `shell` defaults to the running IPython. Asked in order: the shell's ``get_parent()``
    (ipykernel's ZMQInteractiveShell; per thread on 7), then ``kernel.get_parent("shell")``
    (without the channel argument on very old ipykernel).
    """
    ip = _shell(shell)
    if ip is None:
        return None
    getters = [getattr(ip, "get_parent", None)]
    kernel_get = getattr(getattr(ip, "kernel", None), "get_parent", None)
    if kernel_get is not None:
        getters += [lambda: kernel_get("shell"), kernel_get]
    for get in getters:
        if get is None:
            continue
        try:
            msg = get()
        except TypeError:  # old ipykernel: no channel argument (the next getter has none)
            continue
        if msg:
            return msg  # type: ignore[no-any-return]
    return None


def is_live(shell: Any, mode: str = "auto") -> bool:
    """Whether a live front end ran this cell; ``mode`` "always"/"never" override.

    JupyterLab/Notebook 7 default ``allow_stdin: true`` (``KernelConnection.requestExecute``);
    nbclient sets ``kc.allow_stdin = False`` (nbconvert --execute and papermill run on it).
    """
    if mode == "always":
        return True
    if mode == "never":
        return False
    msg = parent_message(shell)
    if not msg:
        return False
    content = msg.get("content") or {}
    return bool(content.get("allow_stdin", False))


def cell_info(shell: Any) -> dict[str, Any]:
    """``{"cell_id", "execution_count"}`` of the running cell (cell_id None without one)."""
    msg = parent_message(shell) or {}
    cell_id = (msg.get("metadata") or {}).get("cellId")
    return {"cell_id": str(cell_id) if cell_id else None, "execution_count": shell.execution_count}


def set_thread_parent(parent: Any) -> None:
    """Route this thread's output to the cell that started the turn (ipykernel 7 rule)."""
    if not parent:
        return
    ip = _shell(None)
    if ip is None:
        return
    if hasattr(ip, "set_thread_parent"):  # ipykernel >= 7 (thread-local)
        ip.set_thread_parent(parent)
    elif hasattr(ip, "set_parent"):  # ipykernel 6: global parent
        ip.set_parent(parent)


def publish(parent: Any, msg_type: str, content: dict[str, Any], ident: Any) -> bool:
    """Send one iopub message attributed to `parent` (the cell that started the turn).

    Why not the usual path: ipykernel picks the parent itself. Comm messages use the kernel's
    shell parent (6: one global; 7: a context variable that other threads resolve to the
    *latest* cell) and display uses the shell's (6: global), so from the worker both name
    whichever cell runs now (tests/notebook/test_kernel_versions.py). False without a kernel: the
    caller then sends the usual way.
    """
    if not isinstance(parent, dict) or not parent.get("header"):
        return False
    kernel = getattr(_shell(None), "kernel", None)
    session = getattr(kernel, "session", None)
    socket = getattr(kernel, "iopub_socket", None)
    if session is None or socket is None:
        return False
    session.send(socket, msg_type, content, parent=parent, ident=ident)
    return True
