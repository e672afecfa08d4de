import sys

from mirage_env.cli import main

main(["train", *sys.argv[1:]])
