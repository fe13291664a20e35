def launch(source, args):
    return source.read(args)
