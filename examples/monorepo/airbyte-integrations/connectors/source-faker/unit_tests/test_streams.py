def test_users_have_a_primary_key():
    from source_faker.streams import Users
    assert Users.primary_key == "id"


def test_products_have_a_primary_key():
    from source_faker.streams import Products
    assert Products.primary_key == "id"
