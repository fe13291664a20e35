def test_client_keeps_its_url():
    from source_file.client import Client
    assert Client("s3://bucket/a.csv").url == "s3://bucket/a.csv"
