"""`python -m rwkv_tune` is the same as the `rwkv-tune` command."""

from rwkv_tune.cli import main

if __name__ == "__main__":
    main()
