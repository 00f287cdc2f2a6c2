module Kcl.Core.Tests.Helpers

open Xunit

[<Fact>]
let ``the test project runs`` () = Assert.True true
