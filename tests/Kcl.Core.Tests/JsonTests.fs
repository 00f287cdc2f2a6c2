module Kcl.Core.Tests.JsonTests

open Xunit
