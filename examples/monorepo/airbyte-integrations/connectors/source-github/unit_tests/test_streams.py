def test_repositories_have_a_primary_key():
    from source_github.streams import Repositories
    assert Repositories.primary_key == "id"
