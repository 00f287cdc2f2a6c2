/// The shard lifecycle as a pure transition function.
[<RequireQualifiedAccess>]
module Kcl.Core.Lifecycle

/// Placeholder.
val placeholder: int
