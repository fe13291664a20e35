package io.airbyte.integrations;

class DestinationPostgresIT {
  @org.junit.jupiter.api.Test
  void readsAndWrites() {}
}
