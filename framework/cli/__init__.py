def main(argv=None):
    raise SystemExit("CLI not built yet")
