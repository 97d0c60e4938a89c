package install_test

import (
	"context"
	"fmt"
	"log"
	"os"

	"github.com/shira-ort/shira-ort/ort/install"
)

// Install ONNX Runtime into the user cache (nothing is downloaded when it
// is already there). ort.Init finds it there by itself;
// ort.Init(ort.WithLibraryPath(res.Path)) names it explicitly, which is
// needed when Options.CacheDir is not the default.
func ExampleLibrary() {
	res, err := install.Library(context.Background(), install.Options{Log: os.Stderr})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("ONNX Runtime library:", res.Path)
}
