def test_hook():
    assert True
