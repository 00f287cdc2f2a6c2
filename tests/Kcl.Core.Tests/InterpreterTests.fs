module Kcl.Core.Tests.InterpreterTests

open Xunit
