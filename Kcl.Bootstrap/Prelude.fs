/// Internal helpers shared by the bootstrap's files.
[<AutoOpen>]
module internal Kcl.Bootstrap.Prelude

/// A computation expression for Result: the first Error stops the run.
type ResultBuilder() =
    member _.Return(x) = Ok x
    member _.ReturnFrom(r: Result<_, _>) = r
    member _.Bind(r, f) = Result.bind f r
    member _.Zero() = Ok()

/// Result's computation expression.
let result = ResultBuilder()
