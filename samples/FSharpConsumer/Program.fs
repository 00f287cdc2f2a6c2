module FSharpConsumer.Program

[<EntryPoint>]
let main _ = 0
