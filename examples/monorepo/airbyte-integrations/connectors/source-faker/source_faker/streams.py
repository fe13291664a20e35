class Users:
    primary_key = "id"


class Products:
    primary_key = "id"


class Purchases:
    primary_key = "id"
