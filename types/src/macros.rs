//! `string_enum!`: an enum whose every variant has one text form, written once. The text is
//! what people type, what JSON holds and what logs print, so `as_str`, `Display`, `FromStr` and
//! serde all come from the same table and cannot drift apart.

/// Defines a fieldless enum with a text form per variant. `FromStr` also accepts `-` for `_`
/// (`pull-request` on a command line, `pull_request` in JSON).
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        pub enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident => $text:literal, )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name {
            $( $(#[$vmeta])* $variant, )+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant,)+];

            /// The variant's one text form.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $( $name::$variant => $text, )+
                }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::UnknownVariant;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                let normalized = s.replace('-', "_");
                $name::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == normalized)
                    .ok_or_else(|| $crate::UnknownVariant {
                        kind: stringify!($name),
                        value: s.to_string(),
                        expected: $name::ALL.iter().map(|v| v.as_str()).collect(),
                    })
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <::std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(::serde::de::Error::custom)
            }
        }
    };
}
