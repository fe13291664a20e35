class AbstractSource:
    def streams(self, config):
        raise NotImplementedError
