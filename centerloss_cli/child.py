"""The entry point of this package's child processes (processes.Child starts them):

    python -m centerloss_cli.child plot  IN_FD OUT_FD PARENT_PID   a plotting process (plots/drawing.serve)
    python -m centerloss_cli.child train IN_FD OUT_FD PARENT_PID   a sweep worker (launch/local.serve)

It imports only what its role needs: a plotting process never imports torch.
"""
import sys

from .procs.processes import Channel


def main(argv: list[str]) -> None:
    role, in_fd, out_fd, parent = argv[:4]
    channel = Channel(int(in_fd), int(out_fd))
    if role == "plot":
        from .plots.drawing import serve

        serve(channel, int(parent))
    elif role == "train":
        from .engine.training import train
        from .launch.local import serve

        serve(channel, int(parent), train)
    else:
        raise SystemExit(f"centerloss_cli.child: unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
