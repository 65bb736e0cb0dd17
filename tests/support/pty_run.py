#!/usr/bin/python3
"""Runs a command on a pseudo-terminal, as an operator at a terminal would, for tests of
behaviour that depends on one (prompts, progress lines).

usage: pty_run.py [--expect TEXT --answer LINE] [--timeout SECONDS] -- COMMAND [ARG...]

The command's standard input, output and error are the terminal. With --expect, once TEXT has
appeared in the output, LINE and a newline are typed. Everything the command wrote is copied to
standard output byte for byte (carriage returns included; the terminal turns "\\n" into "\\r\\n").
Exits with the command's exit code (128+N if signal N ended it), or 124 if it did not end within
the timeout, in which case it is killed (by its PID).
"""
import argparse
import os
import pty
import select
import signal
import sys
import time


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--expect")
    p.add_argument("--answer", default="")
    p.add_argument("--timeout", type=float, default=60)
    p.add_argument("command", nargs=argparse.REMAINDER)
    args = p.parse_args()
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        p.error("no command")

    pid, fd = pty.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)

    out = bytearray()
    answered = args.expect is None
    deadline = time.monotonic() + args.timeout
    status = None
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            sys.stdout.buffer.write(bytes(out))
            sys.stdout.buffer.write(b"\npty_run.py: timed out\n")
            sys.exit(124)
        ready, _, _ = select.select([fd], [], [], min(left, 0.1))
        if ready:
            try:
                data = os.read(fd, 4096)
            except OSError:  # EIO: the command closed the terminal (it ended)
                data = b""
            if not data:
                break
            out += data
            if not answered and args.expect.encode() in out:
                os.write(fd, args.answer.encode() + b"\n")
                answered = True
        elif status is None:
            done, st = os.waitpid(pid, os.WNOHANG)
            if done:
                status = st  # read what is left, then stop
        else:
            break
    if status is None:
        _, status = os.waitpid(pid, 0)
    sys.stdout.buffer.write(bytes(out))
    sys.stdout.flush()
    if os.WIFSIGNALED(status):
        sys.exit(128 + os.WTERMSIG(status))
    sys.exit(os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
