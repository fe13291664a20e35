package io.airbyte.integrations;

class DestinationPostgresStrictEncryptIT {
  @org.junit.jupiter.api.Test
  void readsAndWrites() {}
}
