def test_roundtrip():
    assert True
