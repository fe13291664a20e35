from airbyte_cdk.sources import AbstractSource

from .streams import Products, Purchases, Users


class SourceFaker(AbstractSource):
    def streams(self, config):
        return [Users(config), Products(config), Purchases(config)]
