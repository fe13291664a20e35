def test_structure():
    assert True
