package io.airbyte.integrations;

class SourcePostgresTest {
  @org.junit.jupiter.api.Test
  void starts() {}
}
