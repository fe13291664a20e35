class Repositories:
    primary_key = "id"
