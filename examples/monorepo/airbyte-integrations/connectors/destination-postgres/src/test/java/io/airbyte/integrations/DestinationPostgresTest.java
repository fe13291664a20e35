package io.airbyte.integrations;

class DestinationPostgresTest {
  @org.junit.jupiter.api.Test
  void starts() {}
}
