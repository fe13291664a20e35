def test_remote_csv_is_read():
    assert True
