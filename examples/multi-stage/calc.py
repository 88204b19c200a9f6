"""A tiny calculator: the thing this example pipeline builds, tests and packages."""
import sys


def add(a, b):
    return a + b


def sub(a, b):
    return a - b


def main(argv):
    if len(argv) != 4 or argv[2] not in "+-":
        print("usage: calc A (+|-) B", file=sys.stderr)
        return 2
    a, op, b = int(argv[1]), argv[2], int(argv[3])
    print(add(a, b) if op == "+" else sub(a, b))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
