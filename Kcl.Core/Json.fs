module Kcl.Core.Json

open System

[<RequireQualifiedAccess>]
type DaemonCharset =
    | Utf8
    | PosixAscii

let decodeDaemonMessage (line: ReadOnlySpan<byte>) : Result<DaemonMessage, ProtocolError> = failwith "not yet"
let decodeDaemonLine (line: string) : Result<DaemonMessage, ProtocolError> = failwith "not yet"
let encodeChildMessage (message: ChildMessage) : string = failwith "not yet"
let decodeChildMessage (line: ReadOnlySpan<byte>) : Result<ChildMessage, ProtocolError> = failwith "not yet"
let decodeChildLine (line: string) : Result<ChildMessage, ProtocolError> = failwith "not yet"
let encodeDaemonMessage (charset: DaemonCharset) (message: DaemonMessage) : byte[] = failwith "not yet"
