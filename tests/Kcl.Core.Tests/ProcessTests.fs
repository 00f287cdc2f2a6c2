module Kcl.Core.Tests.ProcessTests

open Xunit
