package transcode

import "go.uber.org/fx"

// Module provides the Compiler configured from Config.
var Module = fx.Module("transcode", fx.Provide(NewCompiler))
