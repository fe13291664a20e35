def test_messages_pass_through():
    assert True
