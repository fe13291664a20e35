def test_executor():
    assert True
