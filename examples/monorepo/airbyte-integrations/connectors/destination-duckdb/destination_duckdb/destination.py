class DestinationDuckdb:
    def write(self, config, catalog, messages):
        yield from messages
