"""`python -m ctxenc ...` (what `torchrun -m ctxenc` needs) runs the same CLI as `ctxenc ...`."""

from ctxenc.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
