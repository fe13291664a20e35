def test_write_then_read():
    assert True
