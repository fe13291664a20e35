def test_read_returns_records():
    assert True
