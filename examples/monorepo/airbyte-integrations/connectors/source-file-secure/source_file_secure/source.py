from source_file.client import Client


class SecureClient(Client):
    pass
