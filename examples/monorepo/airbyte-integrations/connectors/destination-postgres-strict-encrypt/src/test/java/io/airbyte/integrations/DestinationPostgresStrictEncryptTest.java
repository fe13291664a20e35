package io.airbyte.integrations;

class DestinationPostgresStrictEncryptTest {
  @org.junit.jupiter.api.Test
  void starts() {}
}
