def test_trigger():
    assert True
