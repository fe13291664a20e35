package io.airbyte.integrations;

public class DestinationPostgresStrictEncrypt {
  public static void main(String[] args) {}
}
