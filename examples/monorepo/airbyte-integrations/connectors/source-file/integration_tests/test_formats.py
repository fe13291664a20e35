def test_csv_is_read():
    assert True
