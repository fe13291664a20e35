package io.airbyte.integrations;

public class DestinationPostgres {
  public static void main(String[] args) {}
}
