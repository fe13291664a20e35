def test_utcnow():
    assert True
