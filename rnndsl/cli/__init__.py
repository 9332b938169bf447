"""The command line: main.py (`rnndsl check | graph | gradcheck | build | explain |
specs`, and the dispatcher), train.py (`train | sample | info`), args.py (the argument
types every command shares).
"""
